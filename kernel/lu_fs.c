// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdatefs
 *
 * A filesystem whose files survive a kexec: ``mount -t liveupdatefs -o
 * session=NAME none DIR`` mounts the instance of session NAME, created if
 * new, taken over if the previous kernel carried NAME. An instance is a
 * tmpfs superblock made by tmpfs's own fs_context (through the registered
 * "tmpfs" type), so every file, directory and option (size=, mode=, uid=,
 * gid=, huge=, ...) is tmpfs's; liveupdatefs adds the session. Options
 * other than session= apply when the instance is made; later mounts share
 * it and may not give any (-EBUSY).
 *
 * Lifetime: an instance and its outgoing session are made by the first
 * mount of the name and kept by the module (a mount of its own) until
 * they are removed (``rm sessions/outgoing/NAME`` in the control
 * instance, lufs_remove()); unmounting discards nothing. Unlike a session
 * fd, which its holder's death ends, an instance must outlive its
 * mounts: a service's mount namespace goes with the service, and
 * systemd unmounts every filesystem before ``systemctl kexec`` jumps.
 *
 * What is carried: at PREPARE the instance's regular files become the
 * session's files (token: inode number, handler "lufs-file-v1", a memfd's
 * format: the pages themselves, zero-copy), beside one file for the tree
 * (token LU_FS_TREE_TOKEN, "lufs-tree-v1": names, types, modes, owners,
 * times, symlink targets, device numbers, hard links). FREEZE and the
 * reboot notifier write the tree again and carry writes into the files as
 * for memfds. Files created after PREPARE are not carried (the log says
 * how many); sizes are fixed from PREPARE (writes past the end and
 * truncation fail with EPERM, as for preserved memfds); renames, removals
 * and attribute changes are carried as of the kexec.
 *
 * A mount without session= is the control instance (lu_fs_control.c).
 *
 * In the next kernel the first mount of NAME builds the tree in a new
 * instance, restores every file into it and ends the hand-over of the
 * incoming session; the instance then goes on as NAME's outgoing session.
 * RETRIEVE_SESSION of NAME through /dev/liveupdate, if it comes first,
 * restores the instance the same way and hands the incoming session out:
 * RETRIEVE_FD gives the instance's own files (lufs_retrieve()); a mount
 * then mounts the instance. A restore that fails transiently fails the
 * mount (or RETRIEVE_SESSION) and keeps its progress: the next one
 * resumes it. A damaged tree fails every mount (-EIO) until FINISH ends
 * the hand-over; a damaged file stays empty, with one log line.
 *
 * Locking: lufs_lock serializes mounting and removing (finding, making or
 * dropping an instance) and is taken before a superblock's s_umount and
 * lu.lock. The module's mount of an instance is dropped with mntput(),
 * which defers the last put to the task's return. lufs_list_lock (a
 * spinlock) guards the instance list.
 */
#include <linux/cred.h>
#include <linux/dcache.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/fs_parser.h>
#include <linux/kdev_t.h>
#include <linux/mm.h>
#include <linux/mount.h>
#include <linux/namei.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "lu_internal.h"

/**
 * struct lufs_instance - a liveupdatefs superblock and its session
 * @node:        entry in lufs_instances
 * @sb:          the superblock
 * @session:     its outgoing session
 * @mnt:         the module's mount of it, which keeps it until removed
 * @incoming:    the incoming session being restored, or NULL
 * @restored:    new kernel: inode number -> dentry of each regular file
 *               the tree made, until the hand-over ends
 */
struct lufs_instance {
	struct list_head node;
	struct super_block *sb;
	struct lu_session *session;
	struct vfsmount *mnt;
	struct lu_session *incoming;
	struct xarray restored;
};

static LIST_HEAD(lufs_instances);
static DEFINE_SPINLOCK(lufs_list_lock);
static DEFINE_MUTEX(lufs_lock);

static struct file_system_type lufs_type;

/* tmpfs's fs_context operations, which ours wrap. */
static const struct fs_context_operations *lufs_tmpfs_ops;

/**
 * struct lufs_fc - what liveupdatefs keeps of one mount request
 * @node:    entry in lufs_contexts
 * @fc:      the request
 * @session: the session= option
 * @options: an option other than session= was given
 * @internal: lufs_make_sb()'s own request: tmpfs makes the superblock
 * @opts:    the options tmpfs took (struct lufs_opt)
 * @want:    the superblock sget_fc() is to find
 *
 * fc->fs_private is tmpfs's, so ours are looked up by @fc.
 */
struct lufs_fc {
	struct list_head node;
	struct fs_context *fc;
	char session[LIVEUPDATE_SESSION_NAME_LENGTH];
	bool options;
	bool internal;
	struct list_head opts;
	struct super_block *want;
};

/* An option tmpfs took, kept to make the instance with (lufs_make_sb()). */
struct lufs_opt {
	struct list_head node;
	char *key;
	char *value;
};

static LIST_HEAD(lufs_contexts);
static DEFINE_SPINLOCK(lufs_contexts_lock);

static struct lufs_fc *lufs_fc_of(struct fs_context *fc)
{
	struct lufs_fc *ctx;

	guard(spinlock)(&lufs_contexts_lock);
	list_for_each_entry(ctx, &lufs_contexts, node)
		if (ctx->fc == fc)
			return ctx;
	return NULL;
}

/* The instance of session @name, or else of superblock @sb. */
static struct lufs_instance *lufs_find(const char *name,
				       const struct super_block *sb)
{
	struct lufs_instance *inst;

	guard(spinlock)(&lufs_list_lock);
	list_for_each_entry(inst, &lufs_instances, node)
		if (name ? !strcmp(inst->session->name, name) : inst->sb == sb)
			return inst;
	return NULL;
}

/* Opens @dentry of @mnt for the module, read only or read-write. */
static struct file *lufs_open(struct vfsmount *mnt, struct dentry *dentry,
			      int flags)
{
	struct path path = { .mnt = mnt, .dentry = dentry };

	return dentry_open(&path, flags | O_LARGEFILE, current_cred());
}

/* ---- the tree: a snapshot of names and inodes, and its restore ---- */

/**
 * struct lufs_tree - the tree file's state (lu_file.priv)
 * @area:     old kernel: the published snapshot (nodes, then names)
 * @bytes:    its used bytes
 * @desc:     its KHO preservation
 * @nodes:    new kernel: the checked nodes (a copy)
 * @names:    their names, after them
 * @nr_nodes: entries in @nodes
 * @names_bytes: bytes at @names
 * @dentries: new kernel: each node's dentry, once made
 * @next:     new kernel: the first node not made yet
 */
struct lufs_tree {
	void *area;
	size_t bytes;
	struct kho_vmalloc desc;
	struct lu_ser_fs_node *nodes;
	const char *names;
	u64 nr_nodes;
	u64 names_bytes;
	struct dentry **dentries;
	u64 next;
};

struct lufs_snap {
	struct lu_session *session;
	struct lu_ser_fs_node *nodes;
	u64 nr;
	u64 cap;
	struct dentry **dentries;
	char *names;
	u64 names_len;
	u64 names_cap;
	unsigned int skipped;
	bool collect;
};

/*
 * struct lufs_snap: @dentries holds each directory's dentry, and with
 * @collect each regular file's, so that lufs_collect() can open them;
 * without, a regular file that is not the session's is left out.
 */
static void lufs_snap_free(struct lufs_snap *snap)
{
	u64 i;

	for (i = 0; i < snap->nr; i++)
		dput(snap->dentries[i]);
	kvfree(snap->dentries);
	kvfree(snap->nodes);
	kvfree(snap->names);
}

struct lufs_dirent {
	u64 ino;
	unsigned int type;
	unsigned int len;
	char name[];
};

struct lufs_readdir {
	struct dir_context ctx;
	char *buf;
	size_t len;
	size_t cap;
	int err;
};

static bool lufs_readdir_actor(struct dir_context *ctx, const char *name,
			       int len, loff_t pos, u64 ino, unsigned int type)
{
	struct lufs_readdir *rd = container_of(ctx, struct lufs_readdir, ctx);
	size_t need = ALIGN(sizeof(struct lufs_dirent) + len, 8);
	struct lufs_dirent *de;

	if ((len == 1 && name[0] == '.') ||
	    (len == 2 && name[0] == '.' && name[1] == '.'))
		return true;
	if (rd->len + need > rd->cap) {
		size_t cap = max(2 * rd->cap, rd->len + need);
		char *buf = kvrealloc(rd->buf, cap, GFP_KERNEL);

		if (!buf) {
			rd->err = -ENOMEM;
			return false;
		}
		rd->buf = buf;
		rd->cap = cap;
	}
	de = (struct lufs_dirent *)(rd->buf + rd->len);
	de->ino = ino;
	de->type = type;
	de->len = len;
	memcpy(de->name, name, len);
	rd->len += need;
	return true;
}

static int lufs_snap_names(struct lufs_snap *snap, const char *s, size_t len)
{
	if (snap->names_len + len > snap->names_cap) {
		u64 cap = max(2 * snap->names_cap, snap->names_len + len + 256);
		char *names = kvrealloc(snap->names, cap, GFP_KERNEL);

		if (!names)
			return -ENOMEM;
		snap->names = names;
		snap->names_cap = cap;
	}
	memcpy(snap->names + snap->names_len, s, len);
	snap->names_len += len;
	return 0;
}

/* Adds the node of @dentry (a name of @parent, or the root). */
static int lufs_snap_add(struct lufs_snap *snap, struct dentry *dentry,
			 u32 parent, const char *name, unsigned int len)
{
	struct inode *inode = d_inode(dentry);
	struct lu_ser_fs_node *n;
	struct timespec64 ts;
	int err;

	if (snap->nr == snap->cap) {
		u64 cap = max(2 * snap->cap, 64ULL);
		void *nodes, *dirs;

		if (cap > U32_MAX)
			return -E2BIG;
		nodes = kvrealloc(snap->nodes, cap * sizeof(*n), GFP_KERNEL);
		if (nodes)
			snap->nodes = nodes;
		dirs = kvrealloc(snap->dentries, cap * sizeof(*snap->dentries),
				 GFP_KERNEL);
		if (dirs)
			snap->dentries = dirs;
		if (!nodes || !dirs)
			return -ENOMEM;
		snap->cap = cap;
	}
	n = &snap->nodes[snap->nr];
	*n = (struct lu_ser_fs_node){
		.ino = inode->i_ino,
		.parent = parent,
		.mode = inode->i_mode,
		.uid = from_kuid(&init_user_ns, inode->i_uid),
		.gid = from_kgid(&init_user_ns, inode->i_gid),
		.rdev = new_encode_dev(inode->i_rdev),
		.name_len = len,
		.name_off = snap->names_len,
	};
	ts = inode_get_atime(inode);
	n->atime_sec = ts.tv_sec;
	n->atime_nsec = ts.tv_nsec;
	ts = inode_get_mtime(inode);
	n->mtime_sec = ts.tv_sec;
	n->mtime_nsec = ts.tv_nsec;
	ts = inode_get_ctime(inode);
	n->ctime_sec = ts.tv_sec;
	n->ctime_nsec = ts.tv_nsec;
	err = lufs_snap_names(snap, name, len);
	if (!err && S_ISLNK(inode->i_mode)) {
		DEFINE_DELAYED_CALL(done);
		const char *target = vfs_get_link(dentry, &done);

		if (IS_ERR(target)) {
			err = PTR_ERR(target);
		} else {
			n->size = strlen(target);
			err = lufs_snap_names(snap, target, n->size);
		}
		do_delayed_call(&done);
	}
	if (err)
		return err;
	snap->dentries[snap->nr] = S_ISDIR(inode->i_mode) ||
				   (snap->collect && S_ISREG(inode->i_mode)) ?
				   dget(dentry) : NULL;
	snap->nr++;
	return 0;
}

/*
 * Adds the entries of the directory of node @dir (@dentry). A regular
 * file that is not one of the session's files (created after PREPARE)
 * is left out.
 */
static int lufs_snap_dir(struct lufs_snap *snap, struct vfsmount *mnt,
			 struct dentry *dentry, u32 dir)
{
	struct lufs_readdir rd = { .ctx.actor = lufs_readdir_actor };
	struct lufs_dirent *de;
	struct file *file;
	size_t off;
	int err;

	file = lufs_open(mnt, dentry, O_RDONLY | O_DIRECTORY);
	if (IS_ERR(file))
		return PTR_ERR(file);
	err = iterate_dir(file, &rd.ctx);
	fput(file);
	err = err ?: rd.err;
	for (off = 0; !err && off < rd.len;
	     off += ALIGN(sizeof(*de) + de->len, 8)) {
		struct dentry *child;

		de = (struct lufs_dirent *)(rd.buf + off);
		if (de->type == DT_REG && !snap->collect &&
		    !xa_load(&snap->session->tokens, de->ino)) {
			snap->skipped++;
			continue;
		}
		child = lookup_noperm_unlocked(&QSTR_LEN(de->name, de->len),
					       dentry);
		if (IS_ERR(child)) {
			err = PTR_ERR(child);
			break;
		}
		/* Removed meanwhile: not in the tree. */
		if (d_really_is_positive(child))
			err = lufs_snap_add(snap, child, dir, de->name,
					    de->len);
		dput(child);
		cond_resched();
	}
	kvfree(rd.buf);
	return err;
}

/* Every node of the instance, parents first (breadth first). */
static int lufs_snap_tree(struct lufs_snap *snap, struct vfsmount *mnt)
{
	u64 i;
	int err;

	err = lufs_snap_add(snap, mnt->mnt_root, 0, "", 0);
	for (i = 0; !err && i < snap->nr; i++)
		if (S_ISDIR(snap->nodes[i].mode))
			err = lufs_snap_dir(snap, mnt, snap->dentries[i], i);
	return err;
}

/*
 * Takes a snapshot of the tree and preserves it: the area, its KHO
 * preservation and its checksums in @ser. Nothing is published: the
 * caller swaps it in. Return: 0, or an error with nothing left behind.
 */
static int lufs_tree_snapshot(struct lu_file *lf, struct lufs_tree *out,
			      struct lu_ser_fs_tree *ser)
{
	struct lufs_instance *inst = lf->session->fs;
	struct lufs_snap snap = { .session = lf->session };
	size_t nodes_bytes;
	u32 crc;
	int err;

	err = lufs_snap_tree(&snap, inst->mnt);
	if (err)
		goto out;
	nodes_bytes = snap.nr * sizeof(*snap.nodes);
	out->bytes = nodes_bytes + snap.names_len;
	out->area = vmalloc(max_t(size_t, out->bytes, 1));
	if (!out->area) {
		err = -ENOMEM;
		goto out;
	}
	memcpy(out->area, snap.nodes, nodes_bytes);
	memcpy(out->area + nodes_bytes, snap.names, snap.names_len);
	out->desc = (struct kho_vmalloc){};
	err = kho_preserve_vmalloc(out->area, &out->desc);
	if (err) {
		vfree(out->area);
		out->area = NULL;
		goto out;
	}
	*ser = (struct lu_ser_fs_tree){
		.nr_nodes = snap.nr,
		.names_bytes = snap.names_len,
		.area = out->desc,
	};
	/* Our own area: read in place, for its checksums. */
	lu_vmalloc_read(&out->desc, NULL, out->bytes, &crc, &ser->list_crc,
			NULL, NULL, NULL);
	ser->area_crc = crc;
	if (snap.skipped)
		lu_info("instance %s: %u files made after PREPARE are not carried\n",
			lf->session->name, snap.skipped);
out:
	lufs_snap_free(&snap);
	return err;
}

static void lufs_tree_unpublish(struct lufs_tree *tree)
{
	if (!tree->area)
		return;
	kho_unpreserve_vmalloc(&tree->desc);
	vfree(tree->area);
	tree->area = NULL;
}

static int lufs_tree_preserve(struct lu_file *lf)
{
	lf->priv = kzalloc_obj(struct lufs_tree, GFP_KERNEL);
	return lf->priv ? 0 : -ENOMEM;
}

static void lufs_tree_unpreserve(struct lu_file *lf)
{
	kfree(lf->priv);
	lf->priv = NULL;
}

static int lufs_tree_prepare(struct lu_file *lf)
{
	struct lufs_tree *tree = lf->priv;
	struct lu_ser_fs_tree *ser;
	int err;

	ser = lu_file_data_alloc(lf, sizeof(*ser));
	if (IS_ERR(ser))
		return PTR_ERR(ser);
	err = lufs_tree_snapshot(lf, tree, ser);
	if (err)
		return err;
	lf->bytes = tree->bytes;
	return 0;
}

static void lufs_tree_cancel(struct lu_file *lf)
{
	lufs_tree_unpublish(lf->priv);
}

/* FREEZE and the notifier: the tree as it is now replaces the last one. */
static int lufs_tree_freeze(struct lu_file *lf)
{
	struct lufs_tree *tree = lf->priv, next = {};
	struct lu_ser_fs_tree ser;
	int err;

	err = lufs_tree_snapshot(lf, &next, &ser);
	if (err)
		return err;
	lufs_tree_unpublish(tree);
	*tree = next;
	*(struct lu_ser_fs_tree *)lf->data.ptr = ser;
	lf->bytes = tree->bytes;
	return 0;
}

#ifdef LU_DEBUG
/**
 * lufs_debug_damage - test hook: damage a tree as if in transit
 * @lf: an outgoing file, frozen, its checksums written (others are left)
 *
 * Flips bit BIT of the tree's area (its nodes, then its names) if the
 * debug module's test_damage_tree names the instance: SESSION:BIT.
 */
void lufs_debug_damage(struct lu_file *lf)
{
	struct lufs_tree *tree = lf->priv;
	u64 bit;

	if (lf->handler != &lu_fs_tree_handler || !tree || !tree->area ||
	    !lu_debug_damage_tree_bit(lf->session->name, &bit) ||
	    bit / 8 >= tree->bytes)
		return;
	((u8 *)tree->area)[bit / 8] ^= 1 << (bit % 8);
}
#endif

/* ---- new kernel ---- */

static const char *lufs_check_name(const char *name, u32 len)
{
	if (!len || len > NAME_MAX || memchr(name, '/', len) ||
	    memchr(name, 0, len))
		return "bad name";
	if ((len == 1 && name[0] == '.') ||
	    (len == 2 && name[0] == '.' && name[1] == '.'))
		return "bad name";
	return NULL;
}

/* Checks every node before anything is made. Return: why it is bad. */
static const char *lufs_check_nodes(const struct lufs_tree *t)
{
	u64 i;

	if (!t->nr_nodes || !S_ISDIR(t->nodes[0].mode) || t->nodes[0].parent ||
	    t->nodes[0].name_len)
		return "no root directory";
	for (i = 1; i < t->nr_nodes; i++) {
		const struct lu_ser_fs_node *n = &t->nodes[i];
		u64 end = n->name_off + n->name_len +
			  (S_ISLNK(n->mode) ? n->size : 0);

		if (n->parent >= i || !S_ISDIR(t->nodes[n->parent].mode))
			return "parent not a directory before it";
		if (n->name_off > t->names_bytes || end > t->names_bytes ||
		    end < n->name_off)
			return "name out of range";
		if (lufs_check_name(t->names + n->name_off, n->name_len))
			return "bad name";
		switch (n->mode & S_IFMT) {
		case S_IFDIR:
		case S_IFREG:
		case S_IFCHR:
		case S_IFBLK:
		case S_IFIFO:
		case S_IFSOCK:
			break;
		case S_IFLNK:
			if (!n->size || n->size >= PATH_MAX ||
			    memchr(t->names + n->name_off + n->name_len, 0,
				   n->size))
				return "bad symlink target";
			break;
		default:
			return "unknown file type";
		}
	}
	return NULL;
}

static void lufs_damaged(struct lu_file *lf, const char *why)
{
	lu_err("instance %s: damaged tree: %s\n", lf->session->name, why);
}

/*
 * Reads the tree the previous kernel left, checks it and gives its pages
 * back. Return: 0, -EIO for damaged data (its pages stay reserved), or
 * -ENOMEM with nothing changed.
 */
static int lufs_tree_load(struct lu_file *lf, struct lufs_tree *t)
{
	const struct lu_ser_fs_tree *ser = lf->data.ptr;
	u32 crc, list_crc;
	size_t bytes;
	void *bounce, *area;
	const char *why;
	int err;

	if (lf->data.size != sizeof(*ser) || !ser->nr_nodes ||
	    ser->nr_nodes > U32_MAX ||
	    ser->names_bytes > (u64)ser->area.total_pages * PAGE_SIZE) {
		lufs_damaged(lf, "header");
		return -EIO;
	}
	bytes = ser->nr_nodes * sizeof(struct lu_ser_fs_node) +
		ser->names_bytes;
	/* Larger than memory: damaged, not a reason to retry. */
	if (bytes > (size_t)ser->area.total_pages * PAGE_SIZE ||
	    ser->area.total_pages > totalram_pages()) {
		lufs_damaged(lf, "area of the wrong size");
		return -EIO;
	}
	bounce = kmalloc(LU_READ_BOUNCE_SIZE, GFP_KERNEL);
	area = kvmalloc(bytes, GFP_KERNEL);
	t->dentries = kvcalloc(ser->nr_nodes, sizeof(*t->dentries), GFP_KERNEL);
	if (!bounce || !area || !t->dentries) {
		kfree(bounce);
		kvfree(area);
		kvfree(t->dentries);
		t->dentries = NULL;
		return -ENOMEM;
	}
	err = lu_vmalloc_read(&ser->area, area, bytes, &crc, &list_crc, bounce,
			      NULL, NULL);
	kfree(bounce);
	t->nodes = area;
	t->names = area + ser->nr_nodes * sizeof(struct lu_ser_fs_node);
	t->nr_nodes = ser->nr_nodes;
	t->names_bytes = ser->names_bytes;
	if (err || crc != ser->area_crc || list_crc != ser->list_crc)
		why = "checksum mismatch";
	else
		why = lufs_check_nodes(t);
	if (why) {
		lufs_damaged(lf, why);
		kvfree(area);
		t->nodes = NULL;
		t->nr_nodes = 0;
		return -EIO;
	}
	lu_vmalloc_walk(&ser->area, lu_vmalloc_free_page, lu_vmalloc_free_page,
			NULL, NULL);
	return 0;
}

static void lufs_tree_free(struct lufs_tree *t)
{
	u64 i;

	for (i = 0; t->dentries && i < t->nr_nodes; i++)
		dput(t->dentries[i]);
	kvfree(t->dentries);
	kvfree(t->nodes);
	kfree(t);
}

/* Owner, mode and times of node @n, on its made @dentry. */
static int lufs_set_attrs(struct dentry *dentry,
			  const struct lu_ser_fs_node *n)
{
	struct inode *inode = d_inode(dentry);
	struct iattr attr = {
		.ia_valid = ATTR_UID | ATTR_GID | ATTR_ATIME | ATTR_MTIME |
			    ATTR_ATIME_SET | ATTR_MTIME_SET | ATTR_FORCE,
		.ia_uid = make_kuid(&init_user_ns, n->uid),
		.ia_gid = make_kgid(&init_user_ns, n->gid),
		.ia_atime = { n->atime_sec, n->atime_nsec },
		.ia_mtime = { n->mtime_sec, n->mtime_nsec },
	};
	int err;

	if (!S_ISLNK(n->mode)) {
		attr.ia_valid |= ATTR_MODE;
		attr.ia_mode = n->mode;
	}
	inode_lock(inode);
	err = notify_change(&nop_mnt_idmap, dentry, &attr, NULL);
	if (!err)
		inode_set_ctime_to_ts(inode, (struct timespec64){
			n->ctime_sec, n->ctime_nsec });
	inode_unlock(inode);
	return err;
}

/* Makes node @i under its parent's dentry. */
static int lufs_make_node(struct lufs_instance *inst, struct lufs_tree *t,
			  u64 i)
{
	const struct lu_ser_fs_node *n = &t->nodes[i];
	struct dentry *parent = t->dentries[n->parent];
	struct inode *dir = d_inode(parent);
	struct dentry *dentry, *made;
	struct dentry *link = NULL;
	int err = 0;

	if (S_ISREG(n->mode)) {
		link = xa_load(&inst->restored, n->ino);
		/* Reserved first: nothing fails once the entry is made. */
		if (!link && xa_reserve(&inst->restored, n->ino, GFP_KERNEL))
			return -ENOMEM;
	}
	dentry = start_creating_noperm(parent, &QSTR_LEN(t->names + n->name_off,
							 n->name_len));
	if (IS_ERR(dentry)) {
		err = PTR_ERR(dentry);
		goto out;
	}
	made = dentry;
	switch (n->mode & S_IFMT) {
	case S_IFDIR:
		made = vfs_mkdir(&nop_mnt_idmap, dir, dentry, n->mode & 07777,
				 NULL);
		if (IS_ERR(made)) {
			err = PTR_ERR(made);
			made = NULL;
		}
		break;
	case S_IFREG:
		if (link)
			err = vfs_link(link, &nop_mnt_idmap, dir, dentry, NULL);
		else
			err = vfs_create(&nop_mnt_idmap, dentry, n->mode & 07777,
					 NULL);
		break;
	case S_IFLNK: {
		char *target = kmemdup_nul(t->names + n->name_off + n->name_len,
					   n->size, GFP_KERNEL);

		err = target ? vfs_symlink(&nop_mnt_idmap, dir, dentry, target,
					   NULL) : -ENOMEM;
		kfree(target);
		break;
	}
	default:
		err = vfs_mknod(&nop_mnt_idmap, dir, dentry, n->mode,
				new_decode_dev(n->rdev), NULL);
		break;
	}
	if (!err)
		t->dentries[i] = dget(made);
	end_creating(made);
	if (!err && S_ISREG(n->mode) && !link) {
		/* The slot is reserved: storing cannot fail. */
		xa_store(&inst->restored, n->ino, dget(t->dentries[i]),
			 GFP_KERNEL);
		return 0;
	}
out:
	if (S_ISREG(n->mode) && !link)
		xa_release(&inst->restored, n->ino);
	return err;
}

/*
 * New kernel: reads and checks the tree once, into @lf->priv (with no
 * node to trust if it is damaged). Return: 0, -EIO, or -ENOMEM with
 * nothing kept.
 */
static int lufs_tree_open_incoming(struct lu_file *lf)
{
	struct lufs_tree *t;
	int err;

	if (lf->priv)
		return ((struct lufs_tree *)lf->priv)->nodes ? 0 : -EIO;
	t = kzalloc_obj(*t, GFP_KERNEL);
	if (!t)
		return -ENOMEM;
	err = lufs_tree_load(lf, t);
	if (err == -ENOMEM)
		kfree(t);
	else
		lf->priv = t;
	return err;
}

/*
 * New kernel: the tree, made in the instance being restored (only
 * lufs_restore() restores an instance, for a mount or RETRIEVE_SESSION).
 * A failure keeps what was made; the next call goes on from there.
 */
static int lufs_tree_retrieve(struct lu_file *lf)
{
	struct lufs_instance *inst = lf->session->fs;
	struct lufs_tree *t;
	struct file *root;
	u64 i;
	int err;

	if (!inst)
		return -EOPNOTSUPP;
	err = lufs_tree_open_incoming(lf);
	if (err)
		return err;
	t = lf->priv;
	if (!t->next) {
		t->dentries[0] = dget(inst->mnt->mnt_root);
		t->next = 1;
	}
	for (; t->next < t->nr_nodes; t->next++) {
		err = lufs_make_node(inst, t, t->next);
		if (err) {
			lu_err("instance %s: making node %llu failed: %d\n",
			       lf->session->name, t->next, err);
			return err == -EEXIST ? -EIO : err;
		}
		cond_resched();
	}
	for (i = 0; i < t->nr_nodes; i++) {
		err = lufs_set_attrs(t->dentries[i], &t->nodes[i]);
		if (err)
			return err;
	}
	root = lufs_open(inst->mnt, inst->mnt->mnt_root,
			 O_RDONLY | O_DIRECTORY);
	if (IS_ERR(root))
		return PTR_ERR(root);
	lf->file = root;
	lufs_tree_free(t);
	lf->priv = NULL;
	return 0;
}

/*
 * New kernel, end of the hand-over: a tree never retrieved gives its
 * pages back if they check out; a damaged one leaves them reserved.
 */
static int lufs_tree_finish(struct lu_file *lf, u64 *bytes)
{
	bool loaded = lf->priv;
	struct lufs_tree *t;
	int err;

	if (lf->state == LU_FILE_RETRIEVED)
		return 0;
	err = lufs_tree_open_incoming(lf);
	if (err == -ENOMEM)
		return err;
	t = lf->priv;
	if (!err && !loaded)
		*bytes += t->nr_nodes * sizeof(*t->nodes) + t->names_bytes;
	lufs_tree_free(t);
	lf->priv = NULL;
	return 0;
}

static bool lufs_tree_can_preserve(struct file *file)
{
	return false;
}

/* An instance's tree: preserved by lufs_collect(), never by fd. */
struct lu_file_handler lu_fs_tree_handler = {
	.compatible = LU_FS_TREE_COMPATIBLE,
	.can_preserve = lufs_tree_can_preserve,
	.preserve = lufs_tree_preserve,
	.unpreserve = lufs_tree_unpreserve,
	.prepare = lufs_tree_prepare,
	.cancel = lufs_tree_cancel,
	.freeze = lufs_tree_freeze,
	.retrieve = lufs_tree_retrieve,
	.finish = lufs_tree_finish,
};

/**
 * lufs_restored_file - the restored instance's file for a file's token
 * @lf: an incoming lufs-file-v1 file, being retrieved
 *
 * Return: a new file, open for writing, or -ENOENT if the tree has no
 * such file (removed after PREPARE): the restore is over, or it leaves it.
 */
struct file *lufs_restored_file(struct lu_file *lf)
{
	struct lufs_instance *inst = lf->session->fs;
	struct dentry *dentry;

	if (!inst)
		return ERR_PTR(-ENOENT);
	dentry = xa_load(&inst->restored, lf->token);
	if (!dentry)
		return ERR_PTR(-ENOENT);
	return lufs_open(inst->mnt, dentry, O_RDWR);
}

/* ---- PREPARE and CANCEL ---- */

/* Preserves every regular file of the instance not preserved yet. */
static int lufs_collect_files(struct lu_session *session,
			      struct vfsmount *mnt)
{
	struct lufs_snap snap = { .session = session, .collect = true };
	u64 dep = LU_FS_TREE_TOKEN;
	u64 i;
	int err;

	err = lufs_snap_tree(&snap, mnt);
	for (i = 0; !err && i < snap.nr; i++) {
		struct file *file;

		if (!S_ISREG(snap.nodes[i].mode) ||
		    xa_load(&session->tokens, snap.nodes[i].ino))
			continue;
		file = lufs_open(mnt, snap.dentries[i], O_RDONLY);
		if (IS_ERR(file)) {
			err = PTR_ERR(file);
			break;
		}
		err = lu_file_preserve_file(session, file, &lu_fs_file_handler,
					    snap.nodes[i].ino, &dep, 1);
		fput(file);
	}
	lufs_snap_free(&snap);
	return err;
}

/**
 * lufs_collect - make an instance's files the session's files
 * @session: an instance's outgoing session, with no file yet
 *
 * PREPARE, or the reboot notifier without PREPARE: preserves the
 * instance's root directory as the tree's file and each regular file
 * (each inode once), as its tree is now. Nothing happens for a session
 * collected already. A failure unpreserves every file it preserved. The
 * handlers are liveupdate's own (no owner): no reference is taken.
 *
 * Return: 0 or an error.
 */
int lufs_collect(struct lu_session *session)
{
	struct lufs_instance *inst = session->fs;
	struct file *root;
	int err;

	lockdep_assert_held(&lu.lock);
	if (xa_load(&session->tokens, LU_FS_TREE_TOKEN))
		return 0;
	root = lufs_open(inst->mnt, inst->mnt->mnt_root, O_RDONLY | O_DIRECTORY);
	if (IS_ERR(root))
		return PTR_ERR(root);
	err = lu_file_preserve_file(session, root, &lu_fs_tree_handler,
				    LU_FS_TREE_TOKEN, NULL, 0);
	fput(root);
	if (!err)
		err = lufs_collect_files(session, inst->mnt);
	if (err)
		lu_file_unpreserve_all(session);
	return err;
}

/* ---- the filesystem ---- */

static int lufs_parse_param(struct fs_context *fc, struct fs_parameter *param)
{
	struct lufs_fc *ctx = lufs_fc_of(fc);
	struct lufs_opt *opt;
	size_t len;
	int err;

	if (strcmp(param->key, "session")) {
		if (!strcmp(param->key, "source"))
			return lufs_tmpfs_ops->parse_param(fc, param);
		if (param->type != fs_value_is_string &&
		    param->type != fs_value_is_flag)
			return invalfc(fc, "%s: a string or a flag", param->key);
		err = lufs_tmpfs_ops->parse_param(fc, param);
		if (err)
			return err;
		opt = kzalloc_obj(*opt, GFP_KERNEL);
		if (opt)
			opt->key = kstrdup(param->key, GFP_KERNEL);
		if (opt && param->type == fs_value_is_string)
			opt->value = kstrdup(param->string, GFP_KERNEL);
		if (!opt || !opt->key ||
		    (param->type == fs_value_is_string && !opt->value)) {
			if (opt) {
				kfree(opt->key);
				kfree(opt);
			}
			return -ENOMEM;
		}
		list_add_tail(&opt->node, &ctx->opts);
		ctx->options = true;
		return 0;
	}
	if (param->type != fs_value_is_string)
		return invalfc(fc, "session: a name is needed");
	len = strlen(param->string);
	if (!len || len >= LIVEUPDATE_SESSION_NAME_LENGTH)
		return invalfc(fc, "session: 1 to %d bytes",
			       LIVEUPDATE_SESSION_NAME_LENGTH - 1);
	if (fc->purpose == FS_CONTEXT_FOR_RECONFIGURE) {
		struct lufs_instance *inst = lufs_find(NULL, fc->root->d_sb);

		if (!inst || strcmp(inst->session->name, param->string))
			return invalfc(fc, "session: cannot change");
	}
	strscpy(ctx->session, param->string, sizeof(ctx->session));
	return 0;
}

static int lufs_test_super(struct super_block *sb, struct fs_context *fc)
{
	return sb == lufs_fc_of(fc)->want;
}

static int lufs_refuse_super(struct super_block *sb, struct fs_context *fc)
{
	return -EBUSY;
}

/* A get_tree that fails after the superblock was set up: drop it. */
static void lufs_drop_tree(struct fs_context *fc)
{
	struct super_block *sb = fc->root->d_sb;

	dput(fc->root);
	fc->root = NULL;
	deactivate_locked_super(sb);
}

/*
 * Takes the incoming session over: makes the tree and restores every
 * file, then ends the hand-over (a mount: @filep NULL) or hands the
 * session out in *@filep (RETRIEVE_SESSION: closing its fd ends it). A
 * session finished meanwhile (the FINISH event) is dropped either way. A
 * transient failure keeps the progress (the instance keeps the incoming
 * session) for the next mount or RETRIEVE_SESSION to resume.
 */
static int lufs_restore(struct lufs_instance *inst, struct file **filep)
{
	struct lu_session *in = inst->incoming;
	unsigned int nr_files = 0;
	struct dentry *dentry;
	unsigned long ino;
	struct lu_file *lf;
	struct file *file;
	u64 bytes = 0;
	int err;

	lockdep_assert_held(&lufs_lock);
	scoped_cond_guard(mutex_kill, return -EINTR, &in->lock) {
		if (in->state == LU_SESSION_FINISHED)
			break;
		err = lu_file_retrieve(in, LU_FS_TREE_TOKEN, &file);
		if (err)
			return err;
		fput(file);
		list_for_each_entry(lf, &in->files, node) {
			if (!xa_load(&inst->restored, lf->token))
				continue;
			err = lu_file_retrieve(in, lf->token, &file);
			/* Damaged (the handler said why): it stays empty. */
			if (err == -EIO)
				continue;
			if (err)
				return err;
			fput(file);
			cond_resched();
		}
	}
	scoped_cond_guard(mutex_kill, return -EINTR, &lu.lock) {
		if (filep && in->state != LU_SESSION_FINISHED) {
			file = lu_session_getfile(in);
			if (IS_ERR(file))
				return PTR_ERR(file);
			/* An ordinary incoming session from here on. */
			in->fs = NULL;
			*filep = file;
			break;
		}
		err = lu_session_drop_incoming(in, &nr_files, &bytes);
		if (err)
			return err;
		lu_state_session_finished();
	}
	inst->incoming = NULL;
	xa_for_each(&inst->restored, ino, dentry)
		dput(dentry);
	xa_destroy(&inst->restored);
	lu_info("instance %s: taken over\n", inst->session->name);
	return 0;
}

/*
 * Makes an instance's superblock through a request of our own, with the
 * options a mount gave (@opts: struct lufs_opt; NULL for none), so that
 * it is whole (born) before anything else uses it. Return: a mount of
 * it, or an ERR_PTR().
 */
static struct vfsmount *lufs_make_sb(const char *name, struct list_head *opts)
{
	struct vfsmount *mnt;
	struct lufs_opt *opt;
	struct fs_context *fc;
	int err;

	fc = fs_context_for_mount(&lufs_type, 0);
	if (IS_ERR(fc))
		return ERR_CAST(fc);
	lufs_fc_of(fc)->internal = true;
	err = vfs_parse_fs_string(fc, "source", name);
	if (opts) {
		list_for_each_entry(opt, opts, node) {
			if (err)
				break;
			err = vfs_parse_fs_string(fc, opt->key, opt->value);
		}
	}
	mnt = err ? ERR_PTR(err) : fc_mount(fc);
	put_fs_context(fc);
	return mnt;
}

/*
 * The request's superblock is the instance's: sget_fc() finds it (and
 * takes an active reference, s_umount held, as get_tree must return it).
 */
static int lufs_share_sb(struct fs_context *fc, struct lufs_fc *ctx,
			 struct super_block *sb)
{
	ctx->want = sb;
	sb = sget_fc(fc, lufs_test_super, lufs_refuse_super);
	if (IS_ERR(sb))
		return PTR_ERR(sb);
	fc->root = dget(sb->s_root);
	return 0;
}

/* Whether @in is an instance the previous kernel carried, not taken yet. */
static bool lufs_takeable(struct lu_session *in)
{
	return in->state == LU_SESSION_PENDING &&
	       xa_load(&in->tokens, LU_FS_TREE_TOKEN);
}

/**
 * lufs_make_instance - make instance @name
 * @name:  its session's name
 * @opts:  tmpfs options a mount gave (struct lufs_opt), or NULL
 * @fc:    the mount, for its log, or NULL
 * @instp: the new instance
 *
 * Reserve, work, publish last: the superblock first, then under lu.lock
 * the session (which PREPARE may collect from then on) together with the
 * incoming session of that name to restore, if the previous kernel
 * carried @name as an instance.
 *
 * Return: 0; -EBUSY if the previous kernel carried @name otherwise, or
 * once frozen; -EEXIST, -ENOSPC, -ENOMEM or -EINTR.
 */
static int lufs_make_instance(const char *name, struct list_head *opts,
			      struct fs_context *fc,
			      struct lufs_instance **instp)
{
	struct lufs_instance *inst;
	struct lu_session *in;
	struct vfsmount *mnt;
	int err;

	lockdep_assert_held(&lufs_lock);
	inst = kzalloc_obj(*inst, GFP_KERNEL);
	if (!inst)
		return -ENOMEM;
	xa_init(&inst->restored);
	mnt = lufs_make_sb(name, opts);
	if (IS_ERR(mnt)) {
		kfree(inst);
		return PTR_ERR(mnt);
	}
	inst->mnt = mnt;
	inst->sb = mnt->mnt_sb;
	scoped_cond_guard(mutex_kill, err = -EINTR, &lu.lock) {
		in = lu_session_find_incoming(name);
		if (in && !lufs_takeable(in)) {
			if (fc)
				errorfc(fc, "session %s came from the previous kernel, not as an instance that can be taken",
					name);
			err = -EBUSY;
			break;
		}
		err = lu_session_create_fs(name, inst, &inst->session);
		if (err)
			break;
		if (in) {
			lu_session_set_state(in, LU_SESSION_RETRIEVED);
			in->fs = inst;
			inst->incoming = in;
		}
	}
	if (err) {
		/* Not an internal mount: the superblock dies at the task's return. */
		mntput(mnt);
		kfree(inst);
		return err;
	}
	scoped_guard(spinlock, &lufs_list_lock)
		list_add_tail(&inst->node, &lufs_instances);
	*instp = inst;
	return 0;
}

/*
 * Discards @inst unless liveupdate holds its session (PREPARE until
 * CANCEL, the reboot notifier) or its restore is not complete: its
 * session goes at once, its files with its last mount.
 */
static int lufs_discard(struct lufs_instance *inst)
{
	lockdep_assert_held(&lufs_lock);
	scoped_cond_guard(mutex_kill, return -EINTR, &lu.lock) {
		if (lu.rebooting || lu_state_holds_sessions() ||
		    inst->incoming)
			return -EBUSY;
		lu_session_free(inst->session);
	}
	scoped_guard(spinlock, &lufs_list_lock)
		list_del(&inst->node);
	mntput(inst->mnt);
	xa_destroy(&inst->restored);
	kfree(inst);
	return 0;
}

/*
 * A mount's new instance: made, shared with the mount, restored if the
 * previous kernel carried it. An instance made is kept if this mount
 * fails after, unless it is empty and nobody holds it.
 */
static int lufs_new_instance(struct fs_context *fc, struct lufs_fc *ctx)
{
	struct lufs_instance *inst;
	int err;

	err = lufs_make_instance(ctx->session, &ctx->opts, fc, &inst);
	if (err)
		return err;
	err = lufs_share_sb(fc, ctx, inst->sb);
	if (err) {
		lufs_discard(inst);
		return err;
	}
	if (!inst->incoming)
		return 0;
	err = lufs_restore(inst, NULL);
	if (err)
		lufs_drop_tree(fc);
	return err;
}

/**
 * lufs_retrieve - RETRIEVE_SESSION of an instance's session
 * @name:  the session's name
 * @filep: its new file; NULL if @name is not an instance that the
 *         previous kernel carried and nobody took over yet
 *
 * Restores the instance as its first mount would, then hands the
 * incoming session out instead of ending its hand-over: RETRIEVE_FD
 * gives the instance's own files (token: a file's inode number in the
 * previous kernel; the tree's token gives the root directory), and
 * closing the fd ends the hand-over. A mount then mounts the instance. A
 * mount first ends the hand-over itself: RETRIEVE_SESSION finds no
 * session then.
 *
 * Return: 0, or the restore's error, as a mount's.
 */
int lufs_retrieve(const char *name, struct file **filep)
{
	struct lufs_instance *inst;
	struct lu_session *in;
	bool carried;
	int err;

	*filep = NULL;
	ACQUIRE(mutex_kill, lock)(&lufs_lock);
	if (ACQUIRE_ERR(mutex_kill, &lock))
		return -EINTR;
	inst = lufs_find(name, NULL);
	if (!inst) {
		scoped_cond_guard(mutex_kill, return -EINTR, &lu.lock) {
			in = lu_session_find_incoming(name);
			carried = in && lufs_takeable(in);
		}
		if (!carried)
			return 0;
		err = lufs_make_instance(name, NULL, NULL, &inst);
		if (err)
			return err;
		/* Finished meanwhile: no instance was asked for. */
		if (!inst->incoming) {
			lufs_discard(inst);
			return 0;
		}
	}
	return inst->incoming ? lufs_restore(inst, filep) : 0;
}

static int lufs_get_tree(struct fs_context *fc)
{
	struct lufs_fc *ctx = lufs_fc_of(fc);
	struct lufs_instance *inst;
	struct super_block *sb;
	int err;

	if (ctx->internal)
		return lufs_tmpfs_ops->get_tree(fc);
	if (!ctx->session[0]) {
		if (ctx->options)
			return invalfc(fc, "the control instance takes no options");
		return lufs_control_get_tree(fc);
	}
	/* The mount's source is the session: /proc/mounts names it. */
	kfree(fc->source);
	fc->source = kstrdup(ctx->session, GFP_KERNEL);
	if (!fc->source)
		return -ENOMEM;
	guard(mutex)(&lufs_lock);
	inst = lufs_find(ctx->session, NULL);
	if (!inst)
		return lufs_new_instance(fc, ctx);
	if (ctx->options) {
		errorfc(fc, "instance %s exists: options apply when it is made",
			ctx->session);
		return -EBUSY;
	}
	scoped_guard(spinlock, &lufs_list_lock)
		sb = inst->sb;
	if (!sb)
		return -EBUSY;
	err = lufs_share_sb(fc, ctx, sb);
	if (err)
		return err;
	if (inst->incoming) {
		err = lufs_restore(inst, NULL);
		if (err)
			lufs_drop_tree(fc);
	}
	return err;
}

static void lufs_free_fc(struct fs_context *fc)
{
	struct lufs_fc *ctx = lufs_fc_of(fc);

	if (ctx) {
		struct lufs_opt *opt, *next;

		scoped_guard(spinlock, &lufs_contexts_lock)
			list_del(&ctx->node);
		list_for_each_entry_safe(opt, next, &ctx->opts, node) {
			kfree(opt->key);
			kfree(opt->value);
			kfree(opt);
		}
		kfree(ctx);
	}
	if (lufs_tmpfs_ops && lufs_tmpfs_ops->free)
		lufs_tmpfs_ops->free(fc);
}

static int lufs_parse_monolithic(struct fs_context *fc, void *data)
{
	return lufs_tmpfs_ops->parse_monolithic(fc, data);
}

static int lufs_reconfigure(struct fs_context *fc)
{
	struct lufs_fc *ctx = lufs_fc_of(fc);

	if (lufs_control_sb(fc->root->d_sb))
		return ctx->options ?
		       invalfc(fc, "the control instance takes no options") : 0;
	return lufs_tmpfs_ops->reconfigure(fc);
}

static const struct fs_context_operations lufs_context_ops = {
	.free = lufs_free_fc,
	.parse_param = lufs_parse_param,
	.parse_monolithic = lufs_parse_monolithic,
	.get_tree = lufs_get_tree,
	.reconfigure = lufs_reconfigure,
};

/*
 * tmpfs makes the context (its options in fc->fs_private, its
 * operations); ours take session= and wrap the rest.
 */
static int lufs_init_fs_context(struct fs_context *fc)
{
	struct file_system_type *tmpfs;
	struct lufs_fc *ctx;
	int err;

	ctx = kzalloc_obj(*ctx, GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	/* Built in: the type holds no module reference to drop. */
	tmpfs = get_fs_type("tmpfs");
	err = tmpfs ? tmpfs->init_fs_context(fc) : -ENODEV;
	if (err) {
		kfree(ctx);
		return err;
	}
	if (!lufs_tmpfs_ops)
		lufs_tmpfs_ops = fc->ops;
	if (WARN_ON_ONCE(fc->ops != lufs_tmpfs_ops || !fc->ops->parse_param ||
			 !fc->ops->parse_monolithic || !fc->ops->reconfigure)) {
		fc->ops->free(fc);
		fc->ops = NULL;
		kfree(ctx);
		return -ENODEV;
	}
	ctx->fc = fc;
	INIT_LIST_HEAD(&ctx->opts);
	scoped_guard(spinlock, &lufs_contexts_lock)
		list_add(&ctx->node, &lufs_contexts);
	fc->ops = &lufs_context_ops;
	return 0;
}

/**
 * lufs_remove - discard an instance: it is carried no more
 * @name: its session's name
 *
 * Its session goes at once; its files go with its last mount (none may
 * be left).
 *
 * Return: 0; -ENOENT for no outgoing session of that name,
 * -EPERM for a session that is not an instance (close its fd), -EBUSY
 * between PREPARE and CANCEL, after the reboot notifier, or while its
 * restore is not complete; -EINTR if killed while waiting.
 */
int lufs_remove(const char *name)
{
	struct lu_session *session;

	ACQUIRE(mutex_kill, lock)(&lufs_lock);
	if (ACQUIRE_ERR(mutex_kill, &lock))
		return -EINTR;
	scoped_cond_guard(mutex_kill, return -EINTR, &lu.lock) {
		session = lu_session_find_outgoing(name);
		if (!session)
			return -ENOENT;
		if (!session->fs)
			return -EPERM;
	}
	/* Only lufs_lock's holders free an instance's session. */
	return lufs_discard(session->fs);
}

static struct file_system_type lufs_type = {
	.owner = THIS_MODULE,
	.name = "liveupdatefs",
	.init_fs_context = lufs_init_fs_context,
	.kill_sb = kill_anon_super,
	.fs_flags = FS_MGTIME,
};

int lufs_init(void)
{
	return register_filesystem(&lufs_type);
}

void lufs_exit(void)
{
	unregister_filesystem(&lufs_type);
}
