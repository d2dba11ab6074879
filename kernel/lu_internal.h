/* SPDX-License-Identifier: GPL-2.0 */
/*
 * liveupdate: objects shared by the module's files.
 *
 * DOC: locking
 *
 * lu.lock protects the state, the session lists and name tables, every
 * outgoing session and its files, the counters, the KHO table and the
 * subsystems. It is held across whole events (a PREPARE of many GiB
 * included), PRESERVE_FD, CREATE_SESSION and RETRIEVE_SESSION, and by the
 * reboot notifier. Readers of the state alone (sysfs, GET_STATE) do not
 * take it.
 *
 * Each session's lock protects an incoming session's files once its fd
 * is out: their states, its token index and its dependency walks. A
 * RETRIEVE_FD takes only its session's lock, so a long restore holds up
 * neither other sessions nor the device; what ends a session's hand-over
 * (FINISH, closing it, the FINISH event) takes lu.lock, then the
 * session's lock. Outgoing sessions' locks are unused.
 *
 * lu_handlers_lock (lu_participant.c) protects the handler registry and
 * is taken last, under either lock.
 *
 * liveupdatefs (lu_fs.c) takes lufs_lock, then a superblock's s_umount,
 * then lu.lock; its control instance's sessions/ directories take
 * lufs_lock or lu.lock under their inode lock.
 *
 * Order, outermost first: a control directory's inode lock; lufs_lock;
 * an instance's s_umount; lu.lock; a session's lock; a preserved file's
 * inode lock (the memfd handler); a folio's lock; lu_handlers_lock; then
 * KHO's and the xarrays' own locks (lu.busy_files is changed under its
 * xarray lock alone, so a retrieve and a preserve cannot both take a
 * file). Ioctls wait for lu.lock and session locks killably: a caller
 * killed while it waits behind a long operation returns -EINTR. Releases,
 * the reboot notifier and module load and exit wait plainly. Handler and
 * subsystem callbacks run under these locks and must not call back into
 * liveupdate, except for lu_file_dependency(). No fd is installed under a
 * lock with anything left to fail: fd numbers are reserved first and
 * installed last. The memfd handler's workers (PREPARE and retrieve of
 * large files) take none of liveupdate's locks nor the inode's: their
 * caller holds what the step needs and waits for them (flush_work()),
 * so no lock above can be waited for by a worker its holder waits for;
 * their shared state is a spinlock or an atomic, taken last.
 */
#ifndef _LU_INTERNAL_H
#define _LU_INTERNAL_H

#include <linux/device.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/types.h>
#include <linux/xarray.h>

struct fs_context;
struct lufs_instance;

#include <liveupdate/participant.h>

#include "lu_format.h"

/* The release, the same as the Python package's and the Debian packages'. */
#define LU_MODULE_VERSION "0.4.0"

#define lu_err(fmt, ...)  pr_err_ratelimited("liveupdate: " fmt, ##__VA_ARGS__)
#define lu_info(fmt, ...) pr_info("liveupdate: " fmt, ##__VA_ARGS__)

/**
 * enum lu_session_state - where a session is in its hand-over
 * @LU_SESSION_OPEN:      outgoing: its fd is open
 * @LU_SESSION_HELD:      outgoing: its fd was closed between PREPARE and
 *                        CANCEL or the kexec: the module holds it and
 *                        carries it over; CANCEL frees it
 * @LU_SESSION_DROPPED:   outgoing: the reboot notifier could not
 *                        serialize it; it is left out of the hand-over
 * @LU_SESSION_PENDING:   incoming: waits, without an fd, to be retrieved
 * @LU_SESSION_RETRIEVED: incoming: its fd is out
 * @LU_SESSION_FINISHED:  incoming: its hand-over ended (FINISH); the fd
 *                        is still open
 * @LU_SESSION_ORPHANED:  incoming: its fd was closed but finishing it
 *                        failed (-ENOMEM); FINISH or the module's exit
 *                        tries again
 *
 *   outgoing: OPEN --close while PREPARED/FROZEN--> HELD --CANCEL--> freed
 *             OPEN or HELD --the notifier fails it--> DROPPED
 *             OPEN --close in NORMAL--> freed (files unpreserved)
 *   incoming: PENDING --RETRIEVE_SESSION--> RETRIEVED --FINISH--> FINISHED
 *             RETRIEVED or FINISHED --close--> freed (finished first)
 *             RETRIEVED --close, finish fails--> ORPHANED --FINISH--> freed
 *             PENDING --FINISH event or module exit--> freed
 */
enum lu_session_state {
	LU_SESSION_OPEN,
	LU_SESSION_HELD,
	LU_SESSION_DROPPED,
	LU_SESSION_PENDING,
	LU_SESSION_RETRIEVED,
	LU_SESSION_FINISHED,
	LU_SESSION_ORPHANED,
};

/**
 * struct lu_session - a named set of files
 * @node:      entry in lu.outgoing or lu.incoming
 * @name_node: entry in the outgoing or incoming sessions by name
 * @name:      NUL-terminated name
 * @state:     see enum lu_session_state; changed by lu_session_set_state()
 * @files:     the struct lu_file list, in dependency order once sorted
 * @tokens:    the same files by token
 * @nr_files:  entries in @files
 * @walk_gen:  generation of the last dependency walk (lu_file.c)
 * @lock:      an incoming session's files, once its fd is out (DOC: locking)
 * @fs:        a liveupdatefs instance's session: the instance (lu_fs.c);
 *             such a session has no fd, its instance holds it
 */
struct lu_session {
	struct list_head node;
	struct hlist_node name_node;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	enum lu_session_state state;
	struct list_head files;
	struct xarray tokens;
	unsigned int nr_files;
	unsigned int walk_gen;
	struct mutex lock;
	struct lufs_instance *fs;
};

/**
 * struct lu_in_subsystem - a subsystem's data from the previous kernel
 * @name:     the subsystem's name
 * @data:     what its prepare or freeze callback handed over (a copy)
 * @finished: its finish callback ran
 */
struct lu_in_subsystem {
	char name[LU_COMPATIBLE_LENGTH];
	struct lu_data data;
	bool finished;
};

/**
 * struct lu_state - the module's global state
 * @lock:        see the top of this file
 * @state:       an enum liveupdate_state
 * @outgoing:    sessions for the next kernel
 * @incoming:    sessions from the previous kernel
 * @nr_out_sessions: entries in @outgoing
 * @nr_out_files:    files in all outgoing sessions
 * @nr_out_bytes:    memory serialized for them
 * @nr_out_data_bytes: table room taken by participants' data buffers
 * @nr_in_sessions:  incoming sessions not finished
 * @nr_in_files:     files in those sessions
 * @busy_files:  inodes preserved in an outgoing session or retrieved and
 *               not finished yet; a file is carried by one session only
 * @nr_out_deps:     dependencies named by those files
 * @handlers:    registered struct lu_file_handler (lu_handlers_lock)
 * @subsystems:  registered struct lu_subsystem
 * @nr_subsystems:   entries in @subsystems
 * @in_subsystems:   subsystem data from the previous kernel
 * @nr_in_subsystems: entries in @in_subsystems
 * @rebooting:   the kexec reboot notifier has written the table
 * @dev:         the misc device, for uevents
 */
struct lu_state {
	struct mutex lock;
	unsigned int state;
	struct list_head outgoing;
	struct list_head incoming;
	unsigned int nr_out_sessions;
	unsigned int nr_out_files;
	u64 nr_out_bytes;
	size_t nr_out_data_bytes;
	unsigned int nr_in_sessions;
	unsigned int nr_in_files;
	unsigned int nr_out_deps;
	struct list_head handlers;
	struct list_head subsystems;
	unsigned int nr_subsystems;
	struct lu_in_subsystem *in_subsystems;
	unsigned int nr_in_subsystems;
	struct xarray busy_files;
	bool rebooting;
	struct device *dev;
};

extern struct lu_state lu;

/* lu_main.c: ioctl dispatch shared by /dev/liveupdate and session fds */
extern const struct file_operations lu_device_fops;
struct lu_ucmd {
	void __user *ubuffer;
	u32 user_size;
	void *cmd;
};

#define LU_IOCTL_OUTGOING	BIT(0)
#define LU_IOCTL_INCOMING	BIT(1)
#define LU_IOCTL_ANY		(LU_IOCTL_OUTGOING | LU_IOCTL_INCOMING)

struct lu_ioctl_op {
	unsigned int cmd;
	unsigned int size;
	unsigned int min_size;
	unsigned int allowed;
	int (*execute)(void *ctx, struct lu_ucmd *ucmd);
};

#define LU_IOCTL_OP(_cmd, _fn, _struct, _last, _allowed)	\
	{							\
		.cmd = _cmd,					\
		.size = sizeof(_struct),			\
		.min_size = offsetofend(_struct, _last),	\
		.allowed = _allowed,				\
		.execute = _fn,					\
	}

long lu_ioctl_dispatch(const struct lu_ioctl_op *ops, size_t nr_ops,
		       unsigned int kind, unsigned int cmd, unsigned long arg,
		       void *ctx);
int lu_ucmd_respond(struct lu_ucmd *ucmd, size_t size);

/* lu_state.c */
extern const struct attribute_group *lu_state_groups[];
int lu_ioctl_get_state(void *ctx, struct lu_ucmd *ucmd);
int lu_ioctl_set_event(void *ctx, struct lu_ucmd *ucmd);
int lu_state_run_event(struct liveupdate_set_event *arg, bool *ran);
int lu_state_event_named(const char *name);
const char *lu_state_name(void);
void lu_state_kexec(void);
void lu_state_session_finished(void);
bool lu_state_holds_sessions(void);

/* lu_session.c */
static inline bool lu_session_incoming(const struct lu_session *session)
{
	return session->state >= LU_SESSION_PENDING;
}

void lu_session_set_state(struct lu_session *session,
			  enum lu_session_state state);
int lu_session_create(const char *name, struct file **filep);
int lu_session_create_fs(const char *name, struct lufs_instance *fs,
			 struct lu_session **sessionp);
struct lu_session *lu_session_find_incoming(const char *name);
struct lu_session *lu_session_find_outgoing(const char *name);
int lu_session_retrieve(const char *name, struct file **filep);
struct file *lu_session_getfile(struct lu_session *session);
int lu_session_add_incoming(const char *name, struct lu_session **sessionp);
void lu_session_discard_incoming(void);
void lu_session_forget_incoming(void);
void lu_session_free(struct lu_session *session);
int lu_session_finish(struct lu_session *session, unsigned int *nr_files,
		      u64 *bytes);
int lu_session_drop_incoming(struct lu_session *session,
			     unsigned int *nr_files, u64 *bytes);

/* lu_file.c */
int lu_file_preserve(struct lu_session *session, int fd, u64 token,
		     const u64 *deps, unsigned int nr_deps);
int lu_file_preserve_file(struct lu_session *session, struct file *file,
			  struct lu_file_handler *handler, u64 token,
			  const u64 *deps, unsigned int nr_deps);
int lu_file_order(struct lu_session *session, u64 *bad_token);
void lu_file_unpreserve_all(struct lu_session *session);
int lu_file_retrieve(struct lu_session *session, u64 token,
		     struct file **filep);
int lu_file_finish_all(struct lu_session *session, unsigned int *nr_dropped,
		       u64 *bytes);
void lu_file_forget_all(struct lu_session *session);
int lu_file_add_incoming(struct lu_session *session, u64 token,
			 const char *compatible, const void *data, u32 size,
			 const u64 *deps, unsigned int nr_deps);
int lu_file_prepare_all(struct lu_session *session, u64 *failed_token);
void lu_file_cancel_all(struct lu_session *session);
int lu_file_freeze_all(struct lu_session *session, u64 *failed_token);
void lu_file_unfreeze_all(struct lu_session *session);
void lu_file_refreeze_all(struct lu_session *session);

/* lu_participant.c */
struct lu_file_handler *lu_handler_for_file(struct file *file);
struct lu_file_handler *lu_handler_get(const char *compatible);
void lu_handler_put(const struct lu_file_handler *handler);
int lu_subsystems_prepare(const char **failed);
void lu_subsystems_cancel(void);
int lu_subsystems_freeze(const char **failed);
void lu_subsystems_finish(void);
void lu_subsystems_release_incoming(void);

/* lu_memfd.c */
extern struct lu_file_handler lu_memfd_handler;
extern struct lu_file_handler lu_fs_file_handler;
void lu_memfd_exit(void);

/* lu_fs.c: liveupdatefs */
struct lufs_instance;
extern struct lu_file_handler lu_fs_tree_handler;
int lufs_init(void);
void lufs_exit(void);
int lufs_collect(struct lu_session *session);
int lufs_remove(const char *name);
int lufs_retrieve(const char *name, struct file **filep);
struct file *lufs_restored_file(struct lu_file *lf);

/* lu_fs_control.c: liveupdatefs's control instance */
int lufs_control_get_tree(struct fs_context *fc);
bool lufs_control_sb(const struct super_block *sb);

/* lu_kho.c */
u32 lu_crc(const void *p, size_t len, u32 crc);
bool lu_phys_readable(phys_addr_t phys, size_t len);
#define LU_READ_BOUNCE_SIZE	(2 * PAGE_SIZE)
/*
 * What lu_vmalloc_walk() does with each page it visits: @page is NULL for
 * the area's pages, the walk's copy of the page for the list's pages.
 */
typedef int (*lu_page_fn)(void *ctx, phys_addr_t phys, const void *page);
int lu_vmalloc_walk(const struct kho_vmalloc *desc, lu_page_fn data,
		    lu_page_fn list, void *ctx, void *chunk_buf);
/* A lu_page_fn that restores the page from KHO and frees it. */
int lu_vmalloc_free_page(void *ctx, phys_addr_t phys, const void *unused);
/* Sees bytes that lu_vmalloc_read() reads (@len of them at @bytes). */
typedef void (*lu_bytes_fn)(void *ctx, const void *bytes, size_t len);
int lu_vmalloc_read(const struct kho_vmalloc *desc, void *dst, size_t len,
		    u32 *crc, u32 *list_crc, void *bounce,
		    lu_bytes_fn inspect, void *inspect_ctx);
int lu_kho_init(void);
void lu_kho_exit(void);
int lu_kho_reserve(unsigned int more_sessions, unsigned int more_files,
		   unsigned int more_deps, unsigned int more_subsystems,
		   size_t more_data);
size_t lu_data_bytes(size_t size);
void *lu_data_alloc(struct lu_data *data, size_t size);
void lu_data_free(struct lu_data *data);
int lu_data_copy(struct lu_data *data, const void *from, u32 size);
void lu_kho_write_table(void);
void lu_kho_unpublish(void);
int lu_kho_load_incoming(void);
void lu_kho_commit_incoming(void);
void lu_kho_abort_incoming(void);

/* lu_debug.c: test hooks, in the debug build (LU_DEBUG=y) only */
#ifdef LU_DEBUG
/*
 * A field of a hand-over structure, by name, for the damage hooks; tables
 * of them end with an empty entry.
 */
struct lu_debug_field {
	const char *name;
	size_t offset;
	size_t size;
};

#define LU_DEBUG_FIELD(_name, _struct, _member)				\
	{ _name, offsetof(struct _struct, _member),			\
	  sizeof_field(struct _struct, _member) }

const struct lu_debug_field *
lu_debug_field_named(const struct lu_debug_field *fields, const char *name);
void lu_debug_write_field(void *at, size_t size, u64 value, bool xor);
bool lu_debug_fail_prepare(u64 token);
bool lu_debug_fail_freeze(u64 token);
void lu_debug_slow_retrieve(u64 token);
bool lu_debug_fail_folio(void);
void lu_debug_damage(struct lu_ser_root *root, void *table,
		     size_t data_offset);
bool lu_debug_damage_memfd_bit(u64 token, u64 *bit);
bool lu_debug_damage_tree_bit(const char *session, u64 *bit);
void lu_memfd_debug_damage(struct lu_file *lf);
void lufs_debug_damage(struct lu_file *lf);
bool lu_debug_miswrite_memfd(u64 token, char *field, size_t len, u64 *value,
			     bool *xor);
void lu_memfd_debug_miswrite(struct lu_file *lf, void *data, u32 size);
int lu_kho_debug_read_miswritten(const char *spec);
phys_addr_t lu_kho_debug_table_page(void);
void lu_debug_init(void);
void lu_debug_exit(void);
#else
static inline bool lu_debug_fail_prepare(u64 token) { return false; }
static inline bool lu_debug_fail_freeze(u64 token) { return false; }
static inline void lu_debug_slow_retrieve(u64 token) { }
static inline bool lu_debug_fail_folio(void) { return false; }
static inline void lu_debug_damage(struct lu_ser_root *root, void *table,
				   size_t data_offset) { }
static inline void lu_memfd_debug_damage(struct lu_file *lf) { }
static inline void lufs_debug_damage(struct lu_file *lf) { }
static inline void lu_memfd_debug_miswrite(struct lu_file *lf, void *data,
					   u32 size) { }
static inline void lu_debug_init(void) { }
static inline void lu_debug_exit(void) { }
#endif

#endif /* _LU_INTERNAL_H */
