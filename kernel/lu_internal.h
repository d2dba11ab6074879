/* SPDX-License-Identifier: GPL-2.0 */
/*
 * liveupdate: objects shared by the module's files.
 *
 * Locking: one mutex, lu.lock, protects the state, every session and file
 * list, the counters, the busy-file index and the KHO table. It is held
 * across whole ioctls and events (a PREPARE of many GiB included), and by
 * the reboot notifier. Readers of the state alone (sysfs, GET_STATE) do
 * not take it.
 */
#ifndef _LU_INTERNAL_H
#define _LU_INTERNAL_H

#include <linux/device.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/types.h>
#include <linux/xarray.h>

#include "lu_format.h"

#define lu_err(fmt, ...)  pr_err_ratelimited("liveupdate: " fmt, ##__VA_ARGS__)
#define lu_info(fmt, ...) pr_info("liveupdate: " fmt, ##__VA_ARGS__)

struct lu_file;

/**
 * struct lu_file_handler - how one kind of file is carried over
 * @compatible:   name written into the hand-over format
 * @can_preserve: whether @file is of this handler's kind
 * @preserve:     PRESERVE_FD: check that the file can be carried and fix
 *                what must not change (a memfd's size); cheap, no KHO yet
 * @unpreserve:   undo @preserve
 * @prepare:      PREPARE: serialize the file into KHO while it is in use;
 *                set @lf->data and @lf->bytes
 * @cancel:       undo @prepare
 * @freeze:       FREEZE: record what changed since @prepare
 * @unfreeze:     undo @freeze (CANCEL from FROZEN); optional
 * @retrieve:     new kernel: build the file and set @lf->file; may be
 *                called again after a failure and then resumes
 * @finish:       new kernel, end of the hand-over: if @lf->file is NULL
 *                (never retrieved) free the data; returns the bytes freed
 */
struct lu_file_handler {
	const char *compatible;
	bool (*can_preserve)(struct file *file);
	int (*preserve)(struct lu_file *lf);
	void (*unpreserve)(struct lu_file *lf);
	int (*prepare)(struct lu_file *lf);
	void (*cancel)(struct lu_file *lf);
	int (*freeze)(struct lu_file *lf);
	void (*unfreeze)(struct lu_file *lf);
	int (*retrieve)(struct lu_file *lf);
	u64 (*finish)(struct lu_file *lf);
};

/**
 * struct lu_file - a file in a session
 * @node:     entry in the session's @files
 * @token:    the caller's key, unique in the session
 * @handler:  the handler that carries it
 * @file:     outgoing: the preserved file (a reference is held);
 *            incoming: the retrieved file, or NULL before retrieval
 * @data:     physical address of the handler's hand-over block
 * @bytes:    memory serialized for the file (outgoing, once prepared)
 * @prepared: outgoing: @prepare succeeded and was not cancelled
 * @frozen:   outgoing: @freeze succeeded and was not undone
 * @priv:     the handler's state
 */
struct lu_file {
	struct list_head node;
	u64 token;
	const struct lu_file_handler *handler;
	struct file *file;
	phys_addr_t data;
	u64 bytes;
	bool prepared;
	bool frozen;
	void *priv;
};

/**
 * struct lu_session - a named set of files
 * @node:      entry in lu.outgoing or lu.incoming
 * @name:      NUL-terminated name
 * @incoming:  handed over by the previous kernel
 * @retrieved: incoming: an fd was handed out
 * @finished:  incoming: the hand-over of its files ended
 * @orphaned:  outgoing: its fd was closed while the module holds the
 *             session (PREPARED or FROZEN); CANCEL frees it
 * @dropped:   outgoing: the reboot notifier could not serialize it
 * @files:     the struct lu_file list
 * @nr_files:  entries in @files
 */
struct lu_session {
	struct list_head node;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	bool incoming;
	bool retrieved;
	bool finished;
	bool orphaned;
	bool dropped;
	struct list_head files;
	unsigned int nr_files;
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
 * @nr_in_sessions:  incoming sessions not finished
 * @nr_in_files:     files in those sessions
 * @busy_files:  inodes preserved in an outgoing session or retrieved and
 *               not finished yet; a file is carried by one session only
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
	unsigned int nr_in_sessions;
	unsigned int nr_in_files;
	struct xarray busy_files;
	bool rebooting;
	struct device *dev;
};

extern struct lu_state lu;

/* lu_main.c: ioctl dispatch shared by /dev/liveupdate and session fds */
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
void lu_state_kexec(void);
void lu_state_session_finished(void);
bool lu_state_holds_sessions(void);

/* lu_session.c */
int lu_session_create(const char *name, struct file **filep);
int lu_session_retrieve(const char *name, struct file **filep);
int lu_session_add_incoming(const char *name, struct lu_session **sessionp);
void lu_session_discard_incoming(void);
void lu_session_free(struct lu_session *session);
u64 lu_session_finish(struct lu_session *session, unsigned int *nr_files);

/* lu_file.c */
int lu_file_preserve(struct lu_session *session, int fd, u64 token);
void lu_file_unpreserve_all(struct lu_session *session);
int lu_file_retrieve(struct lu_session *session, u64 token,
		     struct file **filep);
u64 lu_file_finish_all(struct lu_session *session, unsigned int *nr_dropped);
int lu_file_add_incoming(struct lu_session *session, u64 token,
			 const char *compatible, phys_addr_t data);
int lu_file_prepare_all(struct lu_session *session, u64 *failed_token);
void lu_file_cancel_all(struct lu_session *session);
int lu_file_freeze_all(struct lu_session *session, u64 *failed_token);
void lu_file_unfreeze_all(struct lu_session *session);
bool lu_file_compatible_known(const char *compatible);

/* lu_memfd.c */
extern const struct lu_file_handler lu_memfd_handler;

/* lu_kho.c */
int lu_kho_init(void);
void lu_kho_exit(void);
int lu_kho_reserve(unsigned int nr_sessions, unsigned int nr_files);
void lu_kho_write_table(void);
void lu_kho_unpublish(void);
void lu_kho_load_incoming(void);

#endif /* _LU_INTERNAL_H */
