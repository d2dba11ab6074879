// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate sessions
 *
 * A session is a named set of preserved files, and an anon-inode fd named
 * "[luo_session] NAME" (systemd recognises session fds by that name).
 *
 * Outgoing sessions are created in this kernel and carried to the next one
 * as long as a process holds their fd until the kexec. Closing the last
 * reference in NORMAL (or UPDATED) unpreserves the files and frees the
 * session. From PREPARE until CANCEL or the kexec the module holds every
 * outgoing session itself: closing its fd, or the death of its holder,
 * does not drop it, and it is carried over; CANCEL frees the sessions
 * whose fds were closed meanwhile. So a frozen set cannot shrink behind
 * the orchestrator's back, e.g. when a shutdown kills the holders.
 *
 * A liveupdatefs instance's session has no fd: its instance holds it
 * until the instance is removed (lu_fs.c).
 *
 * Incoming sessions come from the previous kernel and wait, without an
 * fd, until userspace retrieves them by name. Closing a retrieved
 * session's fd finishes it: files not retrieved are freed, retrieved
 * files become ordinary files. Names are unique among outgoing sessions
 * and among incoming sessions; an outgoing session may reuse the name of
 * an incoming one, as in mainline.
 */
#include <linux/anon_inodes.h>
#include <linux/cleanup.h>
#include <linux/file.h>
#include <linux/hashtable.h>
#include <linux/slab.h>
#include <linux/stringhash.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "lu_internal.h"

/* The transitions of enum lu_session_state, as bits of the new state. */
static const unsigned int lu_session_moves[] = {
	[LU_SESSION_OPEN] = BIT(LU_SESSION_HELD) | BIT(LU_SESSION_DROPPED),
	[LU_SESSION_HELD] = BIT(LU_SESSION_DROPPED),
	[LU_SESSION_PENDING] = BIT(LU_SESSION_RETRIEVED) |
			       BIT(LU_SESSION_FINISHED),
	[LU_SESSION_RETRIEVED] = BIT(LU_SESSION_FINISHED) |
				 BIT(LU_SESSION_ORPHANED),
	[LU_SESSION_ORPHANED] = BIT(LU_SESSION_FINISHED),
};

/**
 * lu_session_set_state - move a session to @state
 * @session: the session
 * @state:   its new state, one the diagram allows from the current one
 */
void lu_session_set_state(struct lu_session *session,
			  enum lu_session_state state)
{
	lockdep_assert_held(&lu.lock);
	WARN_ON_ONCE(!(lu_session_moves[session->state] & BIT(state)));
	session->state = state;
}

/*
 * Sessions by name, one table per direction: a lookup costs O(1) however
 * many sessions there are (CREATE_SESSION, RETRIEVE_SESSION, and the
 * duplicate check when a hand-over is read).
 */
#define LU_NAME_BITS	10
static DEFINE_HASHTABLE(lu_outgoing_names, LU_NAME_BITS);
static DEFINE_HASHTABLE(lu_incoming_names, LU_NAME_BITS);

static struct hlist_head *lu_session_bucket(struct hlist_head *names,
					    const char *name)
{
	u32 hash = full_name_hash(NULL, name,
				  strnlen(name, LIVEUPDATE_SESSION_NAME_LENGTH));

	return &names[hash_min(hash, LU_NAME_BITS)];
}

static struct lu_session *lu_session_find(struct hlist_head *names,
					  const char *name)
{
	struct lu_session *session;

	hlist_for_each_entry(session, lu_session_bucket(names, name), name_node)
		if (!strncmp(session->name, name, sizeof(session->name)))
			return session;
	return NULL;
}

/* Publishes @session under its name, in @list. */
static void lu_session_link(struct lu_session *session,
			    struct list_head *list)
{
	struct hlist_head *names = lu_session_incoming(session) ?
				   lu_incoming_names : lu_outgoing_names;

	list_add_tail(&session->node, list);
	hlist_add_head(&session->name_node,
		       lu_session_bucket(names, session->name));
}

/* Undoes lu_session_link() and frees @session, whose files are gone. */
static void lu_session_unlink(struct lu_session *session)
{
	list_del(&session->node);
	hlist_del_init(&session->name_node);
	xa_destroy(&session->tokens);
	mutex_destroy(&session->lock);
	kfree(session);
}

/**
 * lu_session_free - unpreserve an outgoing session's files and free it
 * @session: the session
 */
void lu_session_free(struct lu_session *session)
{
	lockdep_assert_held(&lu.lock);
	lu_file_unpreserve_all(session);
	lu.nr_out_sessions--;
	lu_session_unlink(session);
}

/**
 * lu_session_finish - end the hand-over of an incoming session
 * @session:  the session
 * @nr_files: incremented for each file that was never retrieved
 * @bytes:    increased by the memory those files returned
 *
 * Waits for a RETRIEVE_FD of the session in progress.
 *
 * Return: 0, -EINTR if killed while waiting, or an error (-ENOMEM) after
 * which the files not finished yet stay for the next call.
 */
int lu_session_finish(struct lu_session *session, unsigned int *nr_files,
		      u64 *bytes)
{
	int err;

	lockdep_assert_held(&lu.lock);
	ACQUIRE(mutex_kill, lock)(&session->lock);
	if (ACQUIRE_ERR(mutex_kill, &lock))
		return -EINTR;
	if (session->state == LU_SESSION_FINISHED)
		return 0;
	err = lu_file_finish_all(session, nr_files, bytes);
	if (err)
		return err;
	lu_session_set_state(session, LU_SESSION_FINISHED);
	lu.nr_in_sessions--;
	return 0;
}

/**
 * lu_session_drop_incoming - finish an incoming session and free it
 * @session:  the session, whose fd (if any) is gone or going
 * @nr_files: incremented for each file that was never retrieved
 * @bytes:    increased by the memory those files returned
 *
 * Return: 0, or the finish's error: the session then stays, for FINISH
 * or the module's exit to try again.
 */
int lu_session_drop_incoming(struct lu_session *session,
			     unsigned int *nr_files, u64 *bytes)
{
	int err = lu_session_finish(session, nr_files, bytes);

	if (err)
		return err;
	lu_session_unlink(session);
	return 0;
}

static int lu_session_release(struct inode *inode, struct file *file)
{
	struct lu_session *session = file->private_data;
	unsigned int nr_files = 0;
	u64 bytes = 0;
	int err;

	guard(mutex)(&lu.lock);
	if (lu_session_incoming(session)) {
		err = lu_session_drop_incoming(session, &nr_files, &bytes);
		if (err) {
			lu_session_set_state(session, LU_SESSION_ORPHANED);
			lu_err("session %s: finish failed: %d; FINISH will retry\n",
			       session->name, err);
		}
		lu_state_session_finished();
		return 0;
	}
	/* Past the reboot notifier the table is written: change nothing. */
	if (lu.rebooting)
		return 0;
	if (lu_state_holds_sessions())
		lu_session_set_state(session, LU_SESSION_HELD);
	else
		lu_session_free(session);
	return 0;
}

static int lu_session_preserve_fd(void *ctx, struct lu_ucmd *ucmd)
{
	struct liveupdate_session_preserve_fd *arg = ucmd->cmd;
	struct lu_session *session = ctx;

	ACQUIRE(mutex_kill, lock)(&lu.lock);
	if (ACQUIRE_ERR(mutex_kill, &lock))
		return -EINTR;
	if (lu.rebooting || lu.state == LIVEUPDATE_STATE_FROZEN)
		return -EBUSY;
	return lu_file_preserve(session, arg->fd, arg->token, NULL, 0);
}

static int lu_session_preserve_fd_deps(void *ctx, struct lu_ucmd *ucmd)
{
	struct liveupdate_session_preserve_fd_deps *arg = ucmd->cmd;
	struct lu_session *session = ctx;
	u64 deps[LIVEUPDATE_MAX_DEPS];

	BUILD_BUG_ON(LIVEUPDATE_MAX_DEPS != LU_MAX_DEPS);
	if (arg->reserved || arg->nr_deps > LIVEUPDATE_MAX_DEPS)
		return -EINVAL;
	if (copy_from_user(deps, u64_to_user_ptr(arg->deps),
			   arg->nr_deps * sizeof(*deps)))
		return -EFAULT;
	ACQUIRE(mutex_kill, lock)(&lu.lock);
	if (ACQUIRE_ERR(mutex_kill, &lock))
		return -EINTR;
	if (lu.rebooting || lu.state == LIVEUPDATE_STATE_FROZEN)
		return -EBUSY;
	return lu_file_preserve(session, arg->fd, arg->token, deps,
				arg->nr_deps);
}

/*
 * The fd number is reserved and the reply written before the file is
 * retrieved, so that nothing can fail after it: a retrieved file is
 * handed out whole or not at all.
 */
static int lu_session_retrieve_fd(void *ctx, struct lu_ucmd *ucmd)
{
	struct liveupdate_session_retrieve_fd *arg = ucmd->cmd;
	struct lu_session *session = ctx;
	struct file *file;
	int fd, err;

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0)
		return fd;
	arg->fd = fd;
	err = lu_ucmd_respond(ucmd, sizeof(*arg));
	if (!err) {
		/* Only this session's: see DOC: locking. */
		scoped_cond_guard(mutex_kill, err = -EINTR, &session->lock)
			err = lu_file_retrieve(session, arg->token, &file);
	}
	if (err) {
		put_unused_fd(fd);
		return err;
	}
	fd_install(fd, file);
	return 0;
}

static int lu_session_ioctl_finish(void *ctx, struct lu_ucmd *ucmd)
{
	struct liveupdate_session_finish *arg = ucmd->cmd;
	struct lu_session *session = ctx;
	unsigned int nr_files = 0;
	u64 bytes = 0;
	int err;

	if (arg->reserved)
		return -EINVAL;
	ACQUIRE(mutex_kill, lock)(&lu.lock);
	if (ACQUIRE_ERR(mutex_kill, &lock))
		return -EINTR;
	err = lu_session_finish(session, &nr_files, &bytes);
	if (!err)
		lu_state_session_finished();
	return err;
}

static int lu_session_get_name(void *ctx, struct lu_ucmd *ucmd)
{
	struct liveupdate_session_get_name *arg = ucmd->cmd;
	struct lu_session *session = ctx;

	if (arg->reserved)
		return -EINVAL;
	strscpy(arg->name, session->name, sizeof(arg->name));
	return lu_ucmd_respond(ucmd, sizeof(*arg));
}

static const struct lu_ioctl_op lu_session_ops[] = {
	LU_IOCTL_OP(LIVEUPDATE_SESSION_PRESERVE_FD, lu_session_preserve_fd,
		    struct liveupdate_session_preserve_fd, token,
		    LU_IOCTL_OUTGOING),
	LU_IOCTL_OP(LIVEUPDATE_SESSION_RETRIEVE_FD, lu_session_retrieve_fd,
		    struct liveupdate_session_retrieve_fd, token,
		    LU_IOCTL_INCOMING),
	LU_IOCTL_OP(LIVEUPDATE_SESSION_FINISH, lu_session_ioctl_finish,
		    struct liveupdate_session_finish, reserved,
		    LU_IOCTL_INCOMING),
	LU_IOCTL_OP(LIVEUPDATE_SESSION_GET_NAME, lu_session_get_name,
		    struct liveupdate_session_get_name, name, LU_IOCTL_ANY),
	LU_IOCTL_OP(LIVEUPDATE_SESSION_PRESERVE_FD_DEPS,
		    lu_session_preserve_fd_deps,
		    struct liveupdate_session_preserve_fd_deps, reserved,
		    LU_IOCTL_OUTGOING),
};

static long lu_session_ioctl(struct file *file, unsigned int cmd,
			     unsigned long arg)
{
	struct lu_session *session = file->private_data;

	return lu_ioctl_dispatch(lu_session_ops, ARRAY_SIZE(lu_session_ops),
				 lu_session_incoming(session) ? LU_IOCTL_INCOMING :
						     LU_IOCTL_OUTGOING,
				 cmd, arg, session);
}

static const struct file_operations lu_session_fops = {
	.owner = THIS_MODULE,
	.release = lu_session_release,
	.unlocked_ioctl = lu_session_ioctl,
};

/**
 * lu_session_getfile - a new fd's file for @session
 * @session: the session
 *
 * Return: the file (named "[luo_session] NAME"), or an ERR_PTR().
 */
struct file *lu_session_getfile(struct lu_session *session)
{
	char *name __free(kfree) = kasprintf(GFP_KERNEL, "[luo_session] %s",
					     session->name);

	if (!name)
		return ERR_PTR(-ENOMEM);
	return anon_inode_getfile(name, &lu_session_fops, session, O_RDWR);
}

/*
 * A new outgoing session, not published yet (lu_session_publish_outgoing()):
 * -EBUSY once frozen, -EEXIST for a name in use, -ENOSPC or -ENOMEM.
 */
static struct lu_session *lu_session_new_outgoing(const char *name)
{
	struct lu_session *session;
	int err;

	lockdep_assert_held(&lu.lock);
	if (lu.rebooting || lu.state == LIVEUPDATE_STATE_FROZEN)
		return ERR_PTR(-EBUSY);
	if (lu_session_find(lu_outgoing_names, name))
		return ERR_PTR(-EEXIST);
	err = lu_kho_reserve(1, 0, 0, 0, 0);
	if (err)
		return ERR_PTR(err);
	session = kzalloc_obj(*session, GFP_KERNEL);
	if (!session)
		return ERR_PTR(-ENOMEM);
	strscpy(session->name, name, sizeof(session->name));
	session->state = LU_SESSION_OPEN;
	INIT_LIST_HEAD(&session->files);
	xa_init(&session->tokens);
	mutex_init(&session->lock);
	return session;
}

static void lu_session_publish_outgoing(struct lu_session *session)
{
	lu_session_link(session, &lu.outgoing);
	lu.nr_out_sessions++;
}

/**
 * lu_session_create - create an outgoing session
 * @name:  a valid name (checked by the caller)
 * @filep: the session's new file
 *
 * Return: 0, -EBUSY once frozen, -EEXIST for a name in use, or -ENOMEM.
 */
int lu_session_create(const char *name, struct file **filep)
{
	struct lu_session *session;
	struct file *file;

	ACQUIRE(mutex_kill, lock)(&lu.lock);
	if (ACQUIRE_ERR(mutex_kill, &lock))
		return -EINTR;
	session = lu_session_new_outgoing(name);
	if (IS_ERR(session))
		return PTR_ERR(session);
	file = lu_session_getfile(session);
	if (IS_ERR(file)) {
		mutex_destroy(&session->lock);
		kfree(session);
		return PTR_ERR(file);
	}
	lu_session_publish_outgoing(session);
	*filep = file;
	return 0;
}

/**
 * lu_session_create_fs - create the outgoing session of a liveupdatefs
 * instance
 * @name:     a valid name
 * @fs:       the instance, which holds the session instead of an fd
 * @sessionp: the new session
 *
 * Return: 0, -EBUSY once frozen, -EEXIST for a name in use, or -ENOMEM.
 */
int lu_session_create_fs(const char *name, struct lufs_instance *fs,
			 struct lu_session **sessionp)
{
	struct lu_session *session = lu_session_new_outgoing(name);

	if (IS_ERR(session))
		return PTR_ERR(session);
	session->fs = fs;
	lu_session_publish_outgoing(session);
	*sessionp = session;
	return 0;
}

/**
 * lu_session_find_incoming - an incoming session by name
 * @name: the name
 *
 * Return: the session, or NULL.
 */
struct lu_session *lu_session_find_incoming(const char *name)
{
	lockdep_assert_held(&lu.lock);
	return lu_session_find(lu_incoming_names, name);
}

/**
 * lu_session_find_outgoing - an outgoing session by name
 * @name: the name
 *
 * Return: the session, or NULL.
 */
struct lu_session *lu_session_find_outgoing(const char *name)
{
	lockdep_assert_held(&lu.lock);
	return lu_session_find(lu_outgoing_names, name);
}

/**
 * lu_session_retrieve - take an incoming session
 * @name:  a valid name (checked by the caller)
 * @filep: the session's new file
 *
 * A liveupdatefs instance's session is restored into its instance first
 * (lufs_retrieve()), before any lock of ours is held.
 *
 * Return: 0, -ENOENT for an unknown name, -EINVAL if it was taken
 * already, -ENOMEM, or an instance's restore error.
 */
int lu_session_retrieve(const char *name, struct file **filep)
{
	struct lu_session *session;
	struct file *file;
	int err;

	err = lufs_retrieve(name, filep);
	if (err || *filep)
		return err;
	ACQUIRE(mutex_kill, lock)(&lu.lock);
	if (ACQUIRE_ERR(mutex_kill, &lock))
		return -EINTR;
	session = lu_session_find(lu_incoming_names, name);
	if (!session)
		return -ENOENT;
	if (session->state != LU_SESSION_PENDING)
		return -EINVAL;
	file = lu_session_getfile(session);
	if (IS_ERR(file))
		return PTR_ERR(file);
	lu_session_set_state(session, LU_SESSION_RETRIEVED);
	*filep = file;
	return 0;
}

/**
 * lu_session_add_incoming - add a session read from the hand-over data
 * @name:     its name, already validated
 * @sessionp: the new session
 *
 * Return: 0, -EBADMSG if an incoming session has that name already, or
 * -ENOMEM.
 */
int lu_session_add_incoming(const char *name, struct lu_session **sessionp)
{
	struct lu_session *session;

	lockdep_assert_held(&lu.lock);
	if (lu_session_find(lu_incoming_names, name))
		return -EBADMSG;
	session = kzalloc_obj(*session, GFP_KERNEL);
	if (!session)
		return -ENOMEM;
	strscpy(session->name, name, sizeof(session->name));
	INIT_LIST_HEAD(&session->files);
	xa_init(&session->tokens);
	mutex_init(&session->lock);
	session->state = LU_SESSION_PENDING;
	lu_session_link(session, &lu.incoming);
	lu.nr_in_sessions++;
	*sessionp = session;
	return 0;
}

/**
 * lu_session_discard_incoming - free incoming sessions nobody retrieved
 *
 * Retrieved sessions hold a module reference through their fd, so at
 * module exit only unretrieved ones remain, and orphaned ones whose
 * finish failed (their memory stays reserved if it fails again).
 */
void lu_session_discard_incoming(void)
{
	struct lu_session *session, *next;
	unsigned int nr_files = 0;
	u64 bytes = 0;

	guard(mutex)(&lu.lock);
	list_for_each_entry_safe(session, next, &lu.incoming, node) {
		if (lu_session_drop_incoming(session, &nr_files, &bytes)) {
			lu_err("session %s: its memory stays reserved\n",
			       session->name);
			lu_file_forget_all(session);
			lu_session_unlink(session);
		}
	}
}

/**
 * lu_session_forget_incoming - free the incoming sessions, not their data
 *
 * A module load that failed: the files' hand-over data stays reserved,
 * untouched, for the next load to take over.
 */
void lu_session_forget_incoming(void)
{
	struct lu_session *session, *next;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry_safe(session, next, &lu.incoming, node) {
		lu_file_forget_all(session);
		lu_session_unlink(session);
	}
	lu.nr_in_sessions = 0;
}
