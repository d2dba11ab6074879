// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdatefs control instance
 *
 * ``mount -t liveupdatefs none DIR`` (no session=) mounts the control
 * instance, one superblock shared by every such mount:
 *
 * - ``state``: reads "normal", "prepared", "frozen" or "updated";
 *   writing "prepare", "freeze", "cancel" or "finish" runs that event as
 *   SET_EVENT does, and its error is the write's. Mode 0644: writing
 *   needs root, not the device (the device's single open does not apply).
 * - ``control``: the same file operations as /dev/liveupdate (its
 *   ioctls, and its single open: opening one while the other is open
 *   fails with EBUSY), so that tools may open either.
 * - ``sessions/outgoing/NAME`` and ``sessions/incoming/NAME``: one file
 *   per session (mainline cannot list incoming sessions at all), reading
 *   its state, whether it is a liveupdatefs instance, its files and, for
 *   an outgoing one, the memory serialized for them. Removing an
 *   outgoing instance's file discards the instance (lufs_remove()).
 *
 * Lookups under sessions/ ask liveupdate every time (nothing is cached):
 * sessions come and go with sessions' fds, mounts and events.
 */
#include <linux/dcache.h>
#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/lockdep.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "lu_internal.h"

#define LUFS_CONTROL_MAGIC	0x4c55434fUL	/* "LUCO" */

/* get_tree_keyed()'s key: one control superblock. */
static int lufs_control_key;

static ssize_t lufs_state_read(struct file *file, char __user *buf,
			       size_t len, loff_t *pos)
{
	char text[16];
	int n = scnprintf(text, sizeof(text), "%s\n", lu_state_name());

	return simple_read_from_buffer(buf, len, pos, text, n);
}

static ssize_t lufs_state_write(struct file *file, const char __user *buf,
				size_t len, loff_t *pos)
{
	struct liveupdate_set_event arg = {};
	char word[16];
	int event, err;
	bool ran;

	if (len >= sizeof(word))
		return -EINVAL;
	if (copy_from_user(word, buf, len))
		return -EFAULT;
	word[len] = 0;
	event = lu_state_event_named(strim(word));
	if (event < 0)
		return event;
	arg.size = sizeof(arg);
	arg.event = event;
	err = lu_state_run_event(&arg, &ran);
	return err ?: len;
}

static const struct file_operations lufs_state_fops = {
	.owner = THIS_MODULE,
	.read = lufs_state_read,
	.write = lufs_state_write,
	.llseek = default_llseek,
};

static const char *const lufs_session_states[] = {
	[LU_SESSION_OPEN] = "open",
	[LU_SESSION_HELD] = "held",
	[LU_SESSION_DROPPED] = "dropped",
	[LU_SESSION_PENDING] = "pending",
	[LU_SESSION_RETRIEVED] = "retrieved",
	[LU_SESSION_FINISHED] = "finished",
	[LU_SESSION_ORPHANED] = "orphaned",
};

static struct lu_session *lufs_session_named(bool incoming, const char *name)
{
	lockdep_assert_held(&lu.lock);
	if (strnlen(name, LIVEUPDATE_SESSION_NAME_LENGTH) ==
	    LIVEUPDATE_SESSION_NAME_LENGTH)
		return NULL;
	return incoming ? lu_session_find_incoming(name) :
			  lu_session_find_outgoing(name);
}

/* sessions/outgoing and sessions/incoming tell themselves apart by this. */
static bool lufs_dir_incoming(const struct inode *dir)
{
	return dir->i_private != NULL;
}

static ssize_t lufs_session_read(struct file *file, char __user *buf,
				 size_t len, loff_t *pos)
{
	struct dentry *dentry = file_dentry(file);
	bool incoming = lufs_dir_incoming(d_inode(dentry->d_parent));
	struct lu_session *session;
	struct lu_file *lf;
	char text[160];
	u64 bytes = 0;
	int n;

	scoped_cond_guard(mutex_kill, return -EINTR, &lu.lock) {
		session = lufs_session_named(incoming, dentry->d_name.name);
		if (!session)
			return -ENOENT;
		list_for_each_entry(lf, &session->files, node)
			bytes += lf->bytes;
		n = scnprintf(text, sizeof(text),
			      "state %s\ninstance %s\nfiles %u\nbytes %llu\n",
			      lufs_session_states[session->state],
			      session->fs || xa_load(&session->tokens,
						     LU_FS_TREE_TOKEN) ?
			      "yes" : "no", session->nr_files,
			      incoming ? 0 : bytes);
	}
	return simple_read_from_buffer(buf, len, pos, text, n);
}

static const struct file_operations lufs_session_fops = {
	.owner = THIS_MODULE,
	.read = lufs_session_read,
	.llseek = default_llseek,
};

/*
 * The directories under sessions/ and their files take liveupdate's
 * locks under their own inode locks (lookup, readdir, unlink), and
 * liveupdate takes instances' inode locks under its lock: one filesystem
 * type, so a class of their own keeps lockdep from taking one for the
 * other.
 */
static struct lock_class_key lufs_control_dir_key;
static struct lock_class_key lufs_control_file_key;

static struct inode *lufs_control_inode(struct super_block *sb, umode_t mode)
{
	struct inode *inode = new_inode(sb);

	if (inode) {
		inode->i_ino = get_next_ino();
		inode->i_mode = mode;
		simple_inode_init_ts(inode);
		lockdep_set_class(&inode->i_rwsem, S_ISDIR(mode) ?
				  &lufs_control_dir_key : &lufs_control_file_key);
	}
	return inode;
}

static struct dentry *lufs_sessions_lookup(struct inode *dir,
					   struct dentry *dentry,
					   unsigned int flags)
{
	struct inode *inode = NULL;
	bool found;

	scoped_cond_guard(mutex_kill, return ERR_PTR(-EINTR), &lu.lock)
		found = lufs_session_named(lufs_dir_incoming(dir),
					   dentry->d_name.name);
	if (found) {
		inode = lufs_control_inode(dir->i_sb, S_IFREG | 0444);
		if (!inode)
			return ERR_PTR(-ENOMEM);
		inode->i_fop = &lufs_session_fops;
	}
	return d_splice_alias(inode, dentry);
}

static int lufs_sessions_iterate(struct file *file, struct dir_context *ctx)
{
	bool incoming = lufs_dir_incoming(file_inode(file));
	struct list_head *list = incoming ? &lu.incoming : &lu.outgoing;
	char (*names)[LIVEUPDATE_SESSION_NAME_LENGTH] = NULL;
	struct lu_session *session;
	unsigned int nr = 0, i;

	if (!dir_emit_dots(file, ctx))
		return 0;
	/* A snapshot: names are copied out without liveupdate's lock. */
	scoped_cond_guard(mutex_kill, return -EINTR, &lu.lock) {
		size_t cap = list_count_nodes(list);

		names = kvmalloc_array(cap, sizeof(*names), GFP_KERNEL);
		if (cap && !names)
			return -ENOMEM;
		list_for_each_entry(session, list, node)
			strscpy(names[nr++], session->name, sizeof(*names));
	}
	for (i = ctx->pos - 2; i < nr; i++) {
		if (!dir_emit(ctx, names[i], strlen(names[i]), i + 3, DT_REG))
			break;
		ctx->pos++;
	}
	kvfree(names);
	return 0;
}

/* rm sessions/outgoing/NAME: a liveupdatefs instance is discarded. */
static int lufs_sessions_unlink(struct inode *dir, struct dentry *dentry)
{
	int err;

	if (lufs_dir_incoming(dir))
		return -EPERM;
	err = lufs_remove(dentry->d_name.name);
	if (!err)
		drop_nlink(d_inode(dentry));
	return err;
}

static const struct inode_operations lufs_sessions_iops = {
	.lookup = lufs_sessions_lookup,
	.unlink = lufs_sessions_unlink,
};

static const struct file_operations lufs_sessions_fops = {
	.owner = THIS_MODULE,
	.iterate_shared = lufs_sessions_iterate,
	.read = generic_read_dir,
	.llseek = generic_file_llseek,
};

/* Makes directory @name under @parent; @private tells sessions/ apart. */
static struct dentry *lufs_control_dir(struct dentry *parent,
				       const char *name, umode_t mode,
				       const struct inode_operations *iops,
				       const struct file_operations *fops,
				       void *private)
{
	struct dentry *dentry = d_alloc_name(parent, name);
	struct inode *inode;

	if (!dentry)
		return NULL;
	inode = lufs_control_inode(parent->d_sb, S_IFDIR | mode);
	if (!inode) {
		dput(dentry);
		return NULL;
	}
	inode->i_op = iops;
	inode->i_fop = fops;
	inode->i_private = private;
	set_nlink(inode, 2);
	inc_nlink(d_inode(parent));
	d_make_persistent(dentry, inode);
	return dentry;
}

static const struct dentry_operations lufs_control_dops = {
	.d_delete = always_delete_dentry,
};

/* "control" among the mount options tells it from the instances. */
static int lufs_control_show_options(struct seq_file *m, struct dentry *root)
{
	seq_puts(m, ",control");
	return 0;
}

static const struct super_operations lufs_control_sops = {
	.statfs = simple_statfs,
	.show_options = lufs_control_show_options,
};

static int lufs_control_fill(struct super_block *sb, struct fs_context *fc)
{
	static const struct tree_descr files[] = {
		[2] = { "state", &lufs_state_fops, 0644 },
		[3] = { "control", &lu_device_fops, 0600 },
		{ "" },
	};
	struct dentry *sessions, *dir;
	int err;

	err = simple_fill_super(sb, LUFS_CONTROL_MAGIC, files);
	if (err)
		return err;
	sb->s_op = &lufs_control_sops;
	set_default_d_op(sb, &lufs_control_dops);
	sessions = lufs_control_dir(sb->s_root, "sessions", 0555,
				    &simple_dir_inode_operations,
				    &simple_dir_operations, NULL);
	if (!sessions)
		return -ENOMEM;
	/* Writable: removing an instance's entry discards the instance. */
	dir = lufs_control_dir(sessions, "outgoing", 0755, &lufs_sessions_iops,
			       &lufs_sessions_fops, NULL);
	if (dir) {
		dput(dir);
		/* Any non-NULL pointer: the incoming sessions. */
		dir = lufs_control_dir(sessions, "incoming", 0555,
				       &lufs_sessions_iops,
				       &lufs_sessions_fops, sb);
	}
	dput(dir);
	dput(sessions);
	return dir ? 0 : -ENOMEM;
}

/* Whether @sb is the control instance's. */
bool lufs_control_sb(const struct super_block *sb)
{
	return sb->s_magic == LUFS_CONTROL_MAGIC;
}

/**
 * lufs_control_get_tree - the control instance, for a mount without session=
 * @fc: the mount request
 *
 * Return: 0 or an error.
 */
int lufs_control_get_tree(struct fs_context *fc)
{
	return get_tree_keyed(fc, lufs_control_fill, &lufs_control_key);
}
