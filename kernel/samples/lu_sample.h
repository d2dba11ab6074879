/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * lu_sample: userspace API of the sample participant (/dev/lu_sample).
 *
 * A slot is a window onto a memfd: an fd whose read(2) returns the bytes
 * [offset, offset + length) of the memfd. Preserving a slot across a live
 * update needs the memfd preserved too, in the same session, named as
 * the slot's dependency (LIVEUPDATE_SESSION_PRESERVE_FD_DEPS).
 */
#ifndef _UAPI_LU_SAMPLE_H
#define _UAPI_LU_SAMPLE_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define LU_SAMPLE_IOCTL_TYPE	0xBA
#define LU_SAMPLE_LABEL_LENGTH	32

/**
 * struct lu_sample_create_slot - ioctl(LU_SAMPLE_CREATE_SLOT) on /dev/lu_sample
 * @size:     sizeof(struct lu_sample_create_slot)
 * @memfd:    input: the memfd the slot reads
 * @offset:   input: first byte of the window
 * @length:   input: bytes in the window
 * @label:    input: a NUL-terminated label
 * @fd:       output: the slot's fd (O_CLOEXEC)
 * @reserved: must be zero
 *
 * Errors: EINVAL bad window, label or @reserved; EBADF @memfd is not open;
 * ENOENT @memfd is not a memfd.
 */
struct lu_sample_create_slot {
	__u32 size;
	__s32 memfd;
	__aligned_u64 offset;
	__aligned_u64 length;
	char label[LU_SAMPLE_LABEL_LENGTH];
	__s32 fd;
	__u32 reserved;
};

/**
 * struct lu_sample_slot_info - ioctl(LU_SAMPLE_SLOT_INFO) on a slot fd
 * @size:       sizeof(struct lu_sample_slot_info)
 * @reserved:   must be zero
 * @offset:     output: first byte of the window
 * @length:     output: bytes in the window
 * @generation: output: the slot's serial number, counted across kernels
 * @label:      output: the slot's label
 */
struct lu_sample_slot_info {
	__u32 size;
	__u32 reserved;
	__aligned_u64 offset;
	__aligned_u64 length;
	__aligned_u64 generation;
	char label[LU_SAMPLE_LABEL_LENGTH];
};

/**
 * struct lu_sample_info - ioctl(LU_SAMPLE_INFO) on /dev/lu_sample
 * @size:        sizeof(struct lu_sample_info)
 * @reserved:    must be zero
 * @generation:  output: slots created so far, across kernels
 * @handed_over: output: the count the previous kernel handed over through
 *               the "lu-sample" subsystem, or 0
 */
struct lu_sample_info {
	__u32 size;
	__u32 reserved;
	__aligned_u64 generation;
	__aligned_u64 handed_over;
};

#define LU_SAMPLE_CREATE_SLOT	_IO(LU_SAMPLE_IOCTL_TYPE, 0xF0)
#define LU_SAMPLE_SLOT_INFO	_IO(LU_SAMPLE_IOCTL_TYPE, 0xF1)
#define LU_SAMPLE_INFO		_IO(LU_SAMPLE_IOCTL_TYPE, 0xF2)

#endif /* _UAPI_LU_SAMPLE_H */
