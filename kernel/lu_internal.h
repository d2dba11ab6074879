/* SPDX-License-Identifier: GPL-2.0 */
/*
 * liveupdate: objects shared by the module's files.
 *
 * Locking: one mutex, lu.lock, protects every session and file list, the
 * counters, the busy-file index and the KHO table. It is held across
 * whole ioctls (a memfd preservation included), and by the reboot
 * notifier while it writes the table.
 */
#ifndef _LU_INTERNAL_H
#define _LU_INTERNAL_H

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
 * @preserve:     do all fallible work: pin and preserve the data, set
 *                @lf->data and @lf->priv
 * @unpreserve:   undo @preserve (session closed before kexec)
 * @freeze:       record what can still change (sizes, positions); runs in
 *                the reboot notifier, must not fail
 * @retrieve:     new kernel: build the file and set @lf->file; may be
 *                called again after a failure and then resumes
 * @discard:      new kernel: free what a never-retrieved file left behind
 */
struct lu_file_handler {
	const char *compatible;
	bool (*can_preserve)(struct file *file);
	int (*preserve)(struct lu_file *lf);
	void (*unpreserve)(struct lu_file *lf);
	void (*freeze)(struct lu_file *lf);
	int (*retrieve)(struct lu_file *lf);
	void (*discard)(struct lu_file *lf);
};

/**
 * struct lu_file - a file in a session
 * @node:    entry in the session's @files
 * @token:   the caller's key, unique in the session
 * @handler: the handler that carries it
 * @file:    outgoing: the preserved file (a reference is held);
 *           incoming: the retrieved file, or NULL before retrieval
 * @data:    physical address of the handler's hand-over block
 * @priv:    the handler's state
 */
struct lu_file {
	struct list_head node;
	u64 token;
	const struct lu_file_handler *handler;
	struct file *file;
	phys_addr_t data;
	void *priv;
};

/**
 * struct lu_session - a named set of files
 * @node:      entry in lu.outgoing or lu.incoming
 * @name:      NUL-terminated name
 * @incoming:  handed over by the previous kernel
 * @retrieved: incoming: an fd was handed out
 * @files:     the struct lu_file list
 * @nr_files:  entries in @files
 */
struct lu_session {
	struct list_head node;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	bool incoming;
	bool retrieved;
	struct list_head files;
	unsigned int nr_files;
};

/**
 * struct lu_state - the module's global state
 * @lock:        see the top of this file
 * @outgoing:    sessions for the next kernel
 * @incoming:    sessions from the previous kernel
 * @nr_out_sessions: entries in @outgoing
 * @nr_out_files:    files in all outgoing sessions
 * @busy_files:  inodes preserved in an outgoing session or retrieved and
 *               not finished yet; a file is carried by one session only
 * @rebooting:   the kexec reboot notifier has written the table
 */
struct lu_state {
	struct mutex lock;
	struct list_head outgoing;
	struct list_head incoming;
	unsigned int nr_out_sessions;
	unsigned int nr_out_files;
	struct xarray busy_files;
	bool rebooting;
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

/* lu_session.c */
int lu_session_create(const char *name, struct file **filep);
int lu_session_retrieve(const char *name, struct file **filep);
int lu_session_add_incoming(const char *name, struct lu_session **sessionp);
void lu_session_discard_incoming(void);

/* lu_file.c */
int lu_file_preserve(struct lu_session *session, int fd, u64 token);
void lu_file_unpreserve_all(struct lu_session *session);
int lu_file_retrieve(struct lu_session *session, u64 token,
		     struct file **filep);
void lu_file_finish_all(struct lu_session *session);
int lu_file_add_incoming(struct lu_session *session, u64 token,
			 const char *compatible, phys_addr_t data);
void lu_file_freeze_all(struct lu_session *session);
bool lu_file_compatible_known(const char *compatible);

/* lu_memfd.c */
extern const struct lu_file_handler lu_memfd_handler;

/* lu_kho.c */
int lu_kho_init(void);
void lu_kho_exit(void);
int lu_kho_reserve(unsigned int nr_sessions, unsigned int nr_files);
void lu_kho_write_table(void);
void lu_kho_load_incoming(void);

#endif /* _LU_INTERNAL_H */
