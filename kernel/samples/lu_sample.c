// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: lu_sample - a liveupdate participant, as an example
 *
 * /dev/lu_sample hands out slots: fds whose read(2) returns a window of a
 * memfd (think of a VM's memory slot over its guest-memory memfd). The
 * module takes part in live updates through <liveupdate/participant.h>:
 *
 * - a file handler ("lu-sample-slot-v1") carries slots. A slot refers to
 *   its memfd, so userspace preserves the memfd in the same session and
 *   names it as the slot's dependency. At PREPARE the handler finds the
 *   memfd among the slot's dependencies and records its token; in the
 *   next kernel liveupdate retrieves the memfd first, and the new slot
 *   refers to the retrieved memfd.
 * - a subsystem ("lu-sample") carries the count of slots ever created, so
 *   that slot numbers keep growing across kernels. The next kernel's copy
 *   reads it when it loads.
 */
#include <linux/anon_inodes.h>
#include <linux/atomic.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <liveupdate/participant.h>

#include "lu_sample.h"

#define LU_SAMPLE_SLOT_COMPATIBLE	"lu-sample-slot-v1"
#define LU_SAMPLE_SUBSYSTEM		"lu-sample"

struct lu_sample_slot {
	struct file *memfd;
	u64 offset;
	u64 length;
	u64 generation;
	char label[LU_SAMPLE_LABEL_LENGTH];
};

/* Hand-over block of one slot. */
struct lu_sample_slot_ser {
	u64 memfd_token;
	u64 offset;
	u64 length;
	u64 generation;
	char label[LU_SAMPLE_LABEL_LENGTH];
};

/* Hand-over block of the subsystem. */
struct lu_sample_counter_ser {
	u64 generation;
};

static atomic64_t lu_sample_generation;
static u64 lu_sample_handed_over;

static ssize_t lu_sample_slot_read(struct file *file, char __user *buf,
				   size_t count, loff_t *ppos)
{
	struct lu_sample_slot *slot = file->private_data;
	ssize_t done = 0, got = 0;
	void *bounce;

	if (*ppos >= slot->length)
		return 0;
	count = min_t(u64, count, slot->length - *ppos);
	bounce = kmalloc(PAGE_SIZE, GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;
	while (done < count) {
		loff_t pos = slot->offset + *ppos;

		got = kernel_read(slot->memfd, bounce,
				  min_t(size_t, count - done, PAGE_SIZE), &pos);
		if (got <= 0)
			break;
		if (copy_to_user(buf + done, bounce, got)) {
			got = -EFAULT;
			break;
		}
		done += got;
		*ppos += got;
	}
	kfree(bounce);
	return done ?: got;
}

static long lu_sample_slot_ioctl(struct file *file, unsigned int cmd,
				 unsigned long arg)
{
	struct lu_sample_slot *slot = file->private_data;
	struct lu_sample_slot_info info;
	u32 usize;
	int err;

	if (cmd != LU_SAMPLE_SLOT_INFO)
		return -ENOTTY;
	if (get_user(usize, (u32 __user *)arg))
		return -EFAULT;
	err = copy_struct_from_user(&info, sizeof(info), (void __user *)arg,
				    usize);
	if (err)
		return err;
	if (info.reserved)
		return -EINVAL;
	info.offset = slot->offset;
	info.length = slot->length;
	info.generation = slot->generation;
	memcpy(info.label, slot->label, sizeof(info.label));
	if (copy_to_user((void __user *)arg, &info, min_t(u32, usize, sizeof(info))))
		return -EFAULT;
	return 0;
}

static int lu_sample_slot_release(struct inode *inode, struct file *file)
{
	struct lu_sample_slot *slot = file->private_data;

	fput(slot->memfd);
	kfree(slot);
	return 0;
}

static const struct file_operations lu_sample_slot_fops = {
	.owner = THIS_MODULE,
	.read = lu_sample_slot_read,
	.unlocked_ioctl = lu_sample_slot_ioctl,
	.release = lu_sample_slot_release,
	.llseek = default_llseek,
};

/* Makes a slot file; takes over the reference to @memfd, even on failure. */
static struct file *lu_sample_new_slot(struct file *memfd, u64 offset,
				       u64 length, const char *label,
				       u64 generation)
{
	struct lu_sample_slot *slot = kzalloc(sizeof(*slot), GFP_KERNEL);
	struct file *file;

	if (!slot) {
		fput(memfd);
		return ERR_PTR(-ENOMEM);
	}
	slot->memfd = memfd;
	slot->offset = offset;
	slot->length = length;
	slot->generation = generation;
	strscpy(slot->label, label, sizeof(slot->label));
	file = anon_inode_getfile("[lu_sample_slot]", &lu_sample_slot_fops,
				  slot, O_RDONLY);
	if (IS_ERR(file)) {
		fput(memfd);
		kfree(slot);
		return file;
	}
	file->f_mode |= FMODE_PREAD | FMODE_LSEEK;
	return file;
}

static long lu_sample_create_slot(unsigned long arg)
{
	struct lu_sample_create_slot req;
	struct file *memfd, *file;
	u32 usize;
	int fd, err;

	if (get_user(usize, (u32 __user *)arg))
		return -EFAULT;
	if (usize < sizeof(req))
		return -EINVAL;
	err = copy_struct_from_user(&req, sizeof(req), (void __user *)arg,
				    usize);
	if (err)
		return err;
	if (req.reserved || !req.length || req.offset + req.length < req.offset ||
	    strnlen(req.label, sizeof(req.label)) == sizeof(req.label))
		return -EINVAL;
	memfd = fget(req.memfd);
	if (!memfd)
		return -EBADF;
	if (!shmem_file(memfd)) {
		fput(memfd);
		return -ENOENT;
	}
	file = lu_sample_new_slot(memfd, req.offset, req.length, req.label,
				  atomic64_inc_return(&lu_sample_generation));
	if (IS_ERR(file))
		return PTR_ERR(file);
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		fput(file);
		return fd;
	}
	req.fd = fd;
	if (copy_to_user((void __user *)arg, &req, sizeof(req))) {
		put_unused_fd(fd);
		fput(file);
		return -EFAULT;
	}
	fd_install(fd, file);
	return 0;
}

static long lu_sample_info(unsigned long arg)
{
	struct lu_sample_info info = {
		.size = sizeof(info),
		.generation = atomic64_read(&lu_sample_generation),
		.handed_over = lu_sample_handed_over,
	};
	u32 usize;

	if (get_user(usize, (u32 __user *)arg))
		return -EFAULT;
	if (usize < sizeof(info))
		return -EINVAL;
	if (copy_to_user((void __user *)arg, &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

static long lu_sample_ioctl(struct file *file, unsigned int cmd,
			    unsigned long arg)
{
	switch (cmd) {
	case LU_SAMPLE_CREATE_SLOT:
		return lu_sample_create_slot(arg);
	case LU_SAMPLE_INFO:
		return lu_sample_info(arg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations lu_sample_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = lu_sample_ioctl,
};

static struct miscdevice lu_sample_miscdev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "lu_sample",
	.fops = &lu_sample_fops,
	.mode = 0600,
};

/* The slot handler: old kernel. */

static bool lu_sample_can_preserve(struct file *file)
{
	return file->f_op == &lu_sample_slot_fops;
}

static int lu_sample_preserve(struct lu_file *lf)
{
	return 0;
}

static void lu_sample_unpreserve(struct lu_file *lf)
{
}

static int lu_sample_prepare(struct lu_file *lf)
{
	struct lu_sample_slot *slot = lf->file->private_data;
	struct lu_sample_slot_ser *ser;
	unsigned int i;

	for (i = 0; i < lf->nr_deps; i++)
		if (lu_file_dependency(lf, lf->deps[i]) == slot->memfd)
			break;
	if (i == lf->nr_deps) {
		pr_err_ratelimited("lu_sample: slot %llu: its memfd is not among its dependencies\n",
				   lf->token);
		return -EINVAL;
	}
	ser = lu_file_data_alloc(lf, sizeof(*ser));
	if (IS_ERR(ser))
		return PTR_ERR(ser);
	ser->memfd_token = lf->deps[i];
	ser->offset = slot->offset;
	ser->length = slot->length;
	ser->generation = slot->generation;
	memcpy(ser->label, slot->label, sizeof(ser->label));
	return 0;
}

/* liveupdate frees the slot's data with the cancelled prepare. */
static void lu_sample_cancel(struct lu_file *lf)
{
}

/* The slot handler: new kernel. liveupdate checked the slot's data. */

static int lu_sample_retrieve(struct lu_file *lf)
{
	const struct lu_sample_slot_ser *ser = lf->data.ptr;
	struct file *memfd, *file;

	if (lf->data.size != sizeof(*ser))
		return -EIO;
	/* liveupdate retrieved the memfd before this slot. */
	memfd = lu_file_dependency(lf, ser->memfd_token);
	if (IS_ERR(memfd))
		return PTR_ERR(memfd);
	file = lu_sample_new_slot(get_file(memfd), ser->offset, ser->length,
				  ser->label, ser->generation);
	if (IS_ERR(file))
		return PTR_ERR(file);
	lf->file = file;
	return 0;
}

/* Nothing of the slot's is in KHO besides its data, which is liveupdate's. */
static int lu_sample_finish(struct lu_file *lf, u64 *bytes)
{
	return 0;
}

static struct lu_file_handler lu_sample_handler = {
	.compatible = LU_SAMPLE_SLOT_COMPATIBLE,
	.owner = THIS_MODULE,
	.can_preserve = lu_sample_can_preserve,
	.preserve = lu_sample_preserve,
	.unpreserve = lu_sample_unpreserve,
	.prepare = lu_sample_prepare,
	.cancel = lu_sample_cancel,
	.retrieve = lu_sample_retrieve,
	.finish = lu_sample_finish,
};

/* The subsystem: the slot counter. */

static int lu_sample_ss_prepare(struct lu_subsystem *ss)
{
	struct lu_sample_counter_ser *ser;

	ser = lu_subsystem_data_alloc(ss, sizeof(*ser));
	if (IS_ERR(ser))
		return PTR_ERR(ser);
	ser->generation = atomic64_read(&lu_sample_generation);
	return 0;
}

/* Slots created between PREPARE and FREEZE count too. */
static int lu_sample_ss_freeze(struct lu_subsystem *ss)
{
	struct lu_sample_counter_ser *ser = ss->data.ptr;

	ser->generation = atomic64_read(&lu_sample_generation);
	return 0;
}

static void lu_sample_ss_cancel(struct lu_subsystem *ss)
{
}

/* The counter was read at load; nothing else was handed over. */
static void lu_sample_ss_finish(struct lu_subsystem *ss,
				const struct lu_data *in)
{
}

static struct lu_subsystem lu_sample_subsystem = {
	.name = LU_SAMPLE_SUBSYSTEM,
	.owner = THIS_MODULE,
	.prepare = lu_sample_ss_prepare,
	.freeze = lu_sample_ss_freeze,
	.cancel = lu_sample_ss_cancel,
	.finish = lu_sample_ss_finish,
};

/*
 * Reads the counter from liveupdate's copy of our data: it stays until
 * our finish callback has run, which cannot happen before we register.
 */
static void lu_sample_take_counter(void)
{
	const struct lu_sample_counter_ser *ser;
	struct lu_data in;

	if (lu_subsystem_incoming(&lu_sample_subsystem, &in) ||
	    in.size != sizeof(*ser))
		return;
	ser = in.ptr;
	lu_sample_handed_over = ser->generation;
	atomic64_set(&lu_sample_generation, ser->generation);
}

static int __init lu_sample_init(void)
{
	int err;

	lu_sample_take_counter();
	err = lu_register_file_handler(&lu_sample_handler);
	if (err)
		return err;
	err = lu_register_subsystem(&lu_sample_subsystem);
	if (err)
		goto err_handler;
	err = misc_register(&lu_sample_miscdev);
	if (err)
		goto err_subsystem;
	return 0;

err_subsystem:
	lu_unregister_subsystem(&lu_sample_subsystem);
err_handler:
	lu_unregister_file_handler(&lu_sample_handler);
	return err;
}

static void __exit lu_sample_exit(void)
{
	misc_deregister(&lu_sample_miscdev);
	lu_unregister_subsystem(&lu_sample_subsystem);
	lu_unregister_file_handler(&lu_sample_handler);
}

module_init(lu_sample_init);
module_exit(lu_sample_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("liveupdate sample participant: memfd slots and a counter");
