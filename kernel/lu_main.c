// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate: /dev/liveupdate and the ioctl dispatcher
 *
 * A loadable Live Update Orchestrator on top of Kexec HandOver. Userspace
 * creates named sessions through /dev/liveupdate and preserves file
 * descriptors in them; the reboot notifier of a kexec writes what is left
 * to record; the next kernel's copy of this module reads it back, and
 * userspace retrieves the sessions and files by name and token.
 *
 * The device may be open once at a time (EBUSY otherwise), as in
 * mainline. Its node is 0600 and no ioctl checks capabilities: the node's
 * permissions decide who may use it.
 */
#include <linux/atomic.h>
#include <linux/cleanup.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kexec_handover.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/reboot.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "lu_internal.h"

struct lu_state lu = {
	.lock = __MUTEX_INITIALIZER(lu.lock),
	.outgoing = LIST_HEAD_INIT(lu.outgoing),
	.incoming = LIST_HEAD_INIT(lu.incoming),
	.handlers = LIST_HEAD_INIT(lu.handlers),
	.subsystems = LIST_HEAD_INIT(lu.subsystems),
	.busy_files = XARRAY_INIT(lu.busy_files, 0),
};

static atomic_t lu_device_in_use = ATOMIC_INIT(0);

union lu_ucmd_buffer {
	struct liveupdate_ioctl_create_session create;
	struct liveupdate_ioctl_retrieve_session retrieve;
	struct liveupdate_session_preserve_fd preserve;
	struct liveupdate_session_retrieve_fd retrieve_fd;
	struct liveupdate_session_finish finish;
	struct liveupdate_session_get_name get_name;
	struct liveupdate_get_state get_state;
	struct liveupdate_set_event set_event;
	struct liveupdate_session_preserve_fd_deps preserve_deps;
};

/**
 * lu_ioctl_dispatch - decode an ioctl and run its handler
 * @ops:    the commands of this kind of fd
 * @nr_ops: entries in @ops
 * @kind:   LU_IOCTL_OUTGOING or LU_IOCTL_INCOMING for session fds,
 *          LU_IOCTL_ANY for /dev/liveupdate
 * @cmd:    the ioctl command
 * @arg:    the user pointer to the command's struct
 * @ctx:    passed to the handler
 *
 * Follows mainline's order of checks so that errnos match: unknown number
 * EINVAL, same number with other bits ENOTTY, wrong kind of session EINVAL,
 * short size EINVAL, non-zero unknown tail E2BIG.
 *
 * Return: the handler's result, or the decoding error.
 */
long lu_ioctl_dispatch(const struct lu_ioctl_op *ops, size_t nr_ops,
		       unsigned int kind, unsigned int cmd, unsigned long arg,
		       void *ctx)
{
	const struct lu_ioctl_op *op = NULL;
	union lu_ucmd_buffer buf;
	struct lu_ucmd ucmd = {
		.ubuffer = (void __user *)arg,
		.cmd = &buf,
	};
	size_t i;
	int err;

	for (i = 0; i < nr_ops; i++) {
		if (_IOC_NR(ops[i].cmd) == _IOC_NR(cmd)) {
			op = &ops[i];
			break;
		}
	}
	if (!op)
		return -EINVAL;
	if (get_user(ucmd.user_size, (u32 __user *)ucmd.ubuffer))
		return -EFAULT;
	if (op->cmd != cmd)
		return -ENOIOCTLCMD;
	if (!(op->allowed & kind))
		return -EINVAL;
	if (ucmd.user_size < op->min_size)
		return -EINVAL;
	if (WARN_ON_ONCE(op->size > sizeof(buf)))
		return -EINVAL;
	err = copy_struct_from_user(&buf, op->size, ucmd.ubuffer,
				    ucmd.user_size);
	if (err)
		return err;
	return op->execute(ctx, &ucmd);
}

/**
 * lu_ucmd_respond - copy a command's struct back to userspace
 * @ucmd: the command
 * @size: the kernel's size of the struct
 *
 * Copies no more than the caller's size, so that older binaries with a
 * shorter struct keep working.
 *
 * Return: 0 or -EFAULT.
 */
int lu_ucmd_respond(struct lu_ucmd *ucmd, size_t size)
{
	if (copy_to_user(ucmd->ubuffer, ucmd->cmd,
			 min_t(size_t, ucmd->user_size, size)))
		return -EFAULT;
	return 0;
}

/* Validates a user-supplied session name: 1..63 bytes and a NUL. */
static int lu_check_name(const u8 *name)
{
	size_t len = strnlen(name, LIVEUPDATE_SESSION_NAME_LENGTH);

	if (!len || len == LIVEUPDATE_SESSION_NAME_LENGTH)
		return -EINVAL;
	return 0;
}

/*
 * Hands a session to userspace as a new fd, iommufd's way: the fd number
 * is reserved and the reply written first, then @open creates or takes
 * the session (publishing it is its last step), and the fd is installed,
 * which cannot fail. A failing call leaves no fd and changes nothing.
 */
static int lu_session_fd(struct lu_ucmd *ucmd, s32 *fdp, size_t size,
			 const u8 *uname,
			 int (*open)(const char *name, struct file **filep))
{
	const char *name = (const char *)uname;
	struct file *file;
	int fd, err;

	err = lu_check_name(uname);
	if (err)
		return err;
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0)
		return fd;
	*fdp = fd;
	err = lu_ucmd_respond(ucmd, size);
	if (!err)
		err = open(name, &file);
	if (err) {
		put_unused_fd(fd);
		return err;
	}
	fd_install(fd, file);
	return 0;
}

static int lu_ioctl_create_session(void *ctx, struct lu_ucmd *ucmd)
{
	struct liveupdate_ioctl_create_session *arg = ucmd->cmd;

	return lu_session_fd(ucmd, &arg->fd, sizeof(*arg), arg->name,
			     lu_session_create);
}

static int lu_ioctl_retrieve_session(void *ctx, struct lu_ucmd *ucmd)
{
	struct liveupdate_ioctl_retrieve_session *arg = ucmd->cmd;

	return lu_session_fd(ucmd, &arg->fd, sizeof(*arg), arg->name,
			     lu_session_retrieve);
}

static const struct lu_ioctl_op lu_device_ops[] = {
	LU_IOCTL_OP(LIVEUPDATE_IOCTL_CREATE_SESSION, lu_ioctl_create_session,
		    struct liveupdate_ioctl_create_session, name, LU_IOCTL_ANY),
	LU_IOCTL_OP(LIVEUPDATE_IOCTL_RETRIEVE_SESSION, lu_ioctl_retrieve_session,
		    struct liveupdate_ioctl_retrieve_session, name, LU_IOCTL_ANY),
	LU_IOCTL_OP(LIVEUPDATE_IOCTL_GET_STATE, lu_ioctl_get_state,
		    struct liveupdate_get_state, nr_bytes, LU_IOCTL_ANY),
	LU_IOCTL_OP(LIVEUPDATE_IOCTL_SET_EVENT, lu_ioctl_set_event,
		    struct liveupdate_set_event, err_session, LU_IOCTL_ANY),
};

static long lu_device_ioctl(struct file *file, unsigned int cmd,
			    unsigned long arg)
{
	return lu_ioctl_dispatch(lu_device_ops, ARRAY_SIZE(lu_device_ops),
				 LU_IOCTL_ANY, cmd, arg, NULL);
}

static int lu_device_open(struct inode *inode, struct file *file)
{
	if (atomic_cmpxchg(&lu_device_in_use, 0, 1))
		return -EBUSY;
	return 0;
}

static int lu_device_release(struct inode *inode, struct file *file)
{
	atomic_set(&lu_device_in_use, 0);
	return 0;
}

/* Also liveupdatefs's control file (lu_fs.c). */
const struct file_operations lu_device_fops = {
	.owner = THIS_MODULE,
	.open = lu_device_open,
	.release = lu_device_release,
	.unlocked_ioctl = lu_device_ioctl,
};

static struct miscdevice lu_miscdev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "liveupdate",
	.fops = &lu_device_fops,
	.mode = 0600,
	.groups = lu_state_groups,
};

/*
 * The kexec reboot path calls the reboot notifiers with "kexec reboot"
 * after the point where mainline's LUO could still fail the kexec, so
 * nothing here can fail it: what userspace did not prepare and freeze is
 * done here on a best-effort basis, then the table is written.
 */
static int lu_reboot_notify(struct notifier_block *nb, unsigned long action,
			    void *data)
{
	if (action == SYS_RESTART && data && !strcmp(data, "kexec reboot"))
		lu_state_kexec();
	return NOTIFY_DONE;
}

static struct notifier_block lu_reboot_nb = {
	.notifier_call = lu_reboot_notify,
	.priority = INT_MAX,
};

/* What the previous kernel handed over and nobody took is freed. */
static void lu_discard_incoming(void)
{
	lu_session_discard_incoming();
	scoped_guard(mutex, &lu.lock)
		lu_subsystems_release_incoming();
}

static int __init lu_init(void)
{
	int err;

	/* -ENODEV, as for absent hardware: modules-load.d tries it everywhere. */
	if (!kho_is_enabled()) {
		pr_info("liveupdate: KHO is off: boot with kho=on\n");
		return -ENODEV;
	}
	err = lu_register_file_handler(&lu_memfd_handler);
	if (err)
		return err;
	err = lu_register_file_handler(&lu_fs_file_handler);
	if (err)
		goto err_handler;
	err = lu_register_file_handler(&lu_fs_tree_handler);
	if (err)
		goto err_fs_file;
	err = lu_kho_init();
	if (err)
		goto err_fs_tree;
	err = lu_kho_load_incoming();
	if (err)
		goto err_kho;
	err = register_reboot_notifier(&lu_reboot_nb);
	if (err)
		goto err_incoming;
	err = misc_register(&lu_miscdev);
	if (err)
		goto err_notifier;
	err = lufs_init();
	if (err)
		goto err_misc;
	/* Nothing can fail from here: take the sessions over, then publish. */
	lu_kho_commit_incoming();
	scoped_guard(mutex, &lu.lock)
		lu.dev = lu_miscdev.this_device;
	lu_debug_init();
	return 0;

err_misc:
	misc_deregister(&lu_miscdev);
err_notifier:
	unregister_reboot_notifier(&lu_reboot_nb);
err_incoming:
	lu_kho_abort_incoming();
err_kho:
	lu_kho_exit();
err_fs_tree:
	lu_unregister_file_handler(&lu_fs_tree_handler);
err_fs_file:
	lu_unregister_file_handler(&lu_fs_file_handler);
err_handler:
	lu_unregister_file_handler(&lu_memfd_handler);
	return err;
}

/*
 * Every open /dev/liveupdate or session fd holds a module reference, and
 * so does the state between PREPARE and CANCEL, so no outgoing session
 * exists here. Incoming sessions that nobody retrieved
 * are discarded and their memory freed.
 */
static void __exit lu_exit(void)
{
	lu_debug_exit();
	lufs_exit();
	scoped_guard(mutex, &lu.lock)
		lu.dev = NULL;
	misc_deregister(&lu_miscdev);
	unregister_reboot_notifier(&lu_reboot_nb);
	lu_discard_incoming();
	lu_kho_exit();
	lu_unregister_file_handler(&lu_fs_tree_handler);
	lu_unregister_file_handler(&lu_fs_file_handler);
	lu_unregister_file_handler(&lu_memfd_handler);
	lu_memfd_exit();
}

module_init(lu_init);
module_exit(lu_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Live Update Orchestrator on Kexec HandOver, as a module");
MODULE_VERSION(LU_MODULE_VERSION);
/*
 * The hand-over formats this module writes and reads, so that a tool can
 * tell from modinfo alone whether a kernel it is about to kexec into can
 * take this one's sessions over (liveupdate kexec checks it).
 */
MODULE_INFO(handover_writes, __stringify(LU_KHO_VERSION));
MODULE_INFO(handover_reads, __stringify(LU_KHO_VERSION));
