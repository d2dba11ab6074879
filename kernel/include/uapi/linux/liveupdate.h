/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * liveupdate: userspace API of /dev/liveupdate and of session fds.
 *
 * The session commands (0x00-0x01 on /dev/liveupdate, 0x40-0x43 on a
 * session fd) are byte-compatible with the Live Update Orchestrator of
 * mainline Linux 7.2: same ioctl type, numbers and struct layouts, so
 * programs written for mainline run unchanged. Extensions of this module
 * use numbers mainline leaves free.
 *
 * Conventions: every command is _IO(LIVEUPDATE_IOCTL_TYPE, nr); its
 * argument is a struct whose first member, @size, is the caller's
 * sizeof(struct). The kernel accepts a larger @size if the extra bytes are
 * zero (else E2BIG) and a smaller one down to the struct's first version
 * (else EINVAL); it writes back at most @size bytes. Reserved fields must
 * be zero.
 *
 * Errors common to all commands:
 *  EINVAL     unknown command number, @size too small, or a bad field
 *  ENOTTY     known number encoded with other direction or size bits
 *  E2BIG      @size larger than known and the extra bytes are not zero
 *  EFAULT     the struct is not readable or writable
 */
#ifndef _UAPI_LINUX_LIVEUPDATE_H
#define _UAPI_LINUX_LIVEUPDATE_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define LIVEUPDATE_IOCTL_TYPE		0xBA

/* Length of a session name, including its terminating NUL. */
#define LIVEUPDATE_SESSION_NAME_LENGTH	64

/* Commands on /dev/liveupdate. */
enum {
	LIVEUPDATE_CMD_BASE = 0x00,
	LIVEUPDATE_CMD_CREATE_SESSION = LIVEUPDATE_CMD_BASE,
	LIVEUPDATE_CMD_RETRIEVE_SESSION = 0x01,
};

/* Commands on a session fd. */
enum {
	LIVEUPDATE_CMD_SESSION_BASE = 0x40,
	LIVEUPDATE_CMD_SESSION_PRESERVE_FD = LIVEUPDATE_CMD_SESSION_BASE,
	LIVEUPDATE_CMD_SESSION_RETRIEVE_FD = 0x41,
	LIVEUPDATE_CMD_SESSION_FINISH = 0x42,
	LIVEUPDATE_CMD_SESSION_GET_NAME = 0x43,
};

/**
 * struct liveupdate_ioctl_create_session - ioctl(LIVEUPDATE_IOCTL_CREATE_SESSION)
 * @size: sizeof(struct liveupdate_ioctl_create_session)
 * @fd:   output: the new session's fd (O_CLOEXEC)
 * @name: input: the session's name, 1 to 63 bytes and a NUL
 *
 * Creates an outgoing session: files preserved in it are carried across
 * the next kexec as long as some process holds the session fd until then.
 * Closing the last reference to the fd before kexec unpreserves the files
 * and frees the session; between PREPARE and CANCEL (see
 * LIVEUPDATE_IOCTL_SET_EVENT) the module keeps the session instead.
 *
 * Errors: EINVAL empty or unterminated @name; EEXIST an outgoing session
 * has this name; EBUSY the state is FROZEN or the kexec reboot has
 * started; ENOSPC the hand-over table is full (256 MiB: millions of
 * files); ENOMEM.
 */
struct liveupdate_ioctl_create_session {
	__u32 size;
	__s32 fd;
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];
};

#define LIVEUPDATE_IOCTL_CREATE_SESSION \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION)

/**
 * struct liveupdate_ioctl_retrieve_session - ioctl(LIVEUPDATE_IOCTL_RETRIEVE_SESSION)
 * @size: sizeof(struct liveupdate_ioctl_retrieve_session)
 * @fd:   output: the session's fd (O_CLOEXEC)
 * @name: input: the name the session had in the previous kernel
 *
 * Takes a session that the previous kernel handed over. Closing its fd
 * finishes it (see LIVEUPDATE_SESSION_FINISH).
 *
 * Errors: EINVAL empty or unterminated @name, or the session was already
 * retrieved; ENOENT no incoming session has this name.
 */
struct liveupdate_ioctl_retrieve_session {
	__u32 size;
	__s32 fd;
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];
};

#define LIVEUPDATE_IOCTL_RETRIEVE_SESSION \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_RETRIEVE_SESSION)

/**
 * struct liveupdate_session_preserve_fd - ioctl(LIVEUPDATE_SESSION_PRESERVE_FD)
 * @size:  sizeof(struct liveupdate_session_preserve_fd)
 * @fd:    input: the fd to preserve
 * @token: input: the caller's key for the file, unique in the session
 *
 * Preserves the file behind @fd in an outgoing session. The session keeps
 * a reference to the file; the caller may close @fd. A memfd's size is
 * fixed from here on (it cannot grow or shrink); its contents may change
 * until the kexec.
 *
 * Errors: EINVAL the session is incoming; EEXIST @token is used in this
 * session; EBADF @fd is not open; ENOENT no handler can preserve this kind
 * of file; EBUSY the file is preserved in a session already, the state is
 * FROZEN, or the kexec reboot has started; EOPNOTSUPP the file has a property that cannot be
 * carried; EFBIG the file is too large; ENOSPC the hand-over table is
 * full; ENOMEM.
 */
struct liveupdate_session_preserve_fd {
	__u32 size;
	__s32 fd;
	__aligned_u64 token;
};

#define LIVEUPDATE_SESSION_PRESERVE_FD \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_PRESERVE_FD)

/**
 * struct liveupdate_session_retrieve_fd - ioctl(LIVEUPDATE_SESSION_RETRIEVE_FD)
 * @size:  sizeof(struct liveupdate_session_retrieve_fd)
 * @fd:    output: an fd (O_CLOEXEC) for the file
 * @token: input: the token the file was preserved with
 *
 * Returns the file preserved under @token in an incoming session. Asking
 * again returns a new fd for the same file.
 *
 * Errors: EINVAL the session is outgoing; ENOENT no file has this token
 * (or the session is finished); EIO the preserved data is damaged; ENOMEM.
 */
struct liveupdate_session_retrieve_fd {
	__u32 size;
	__s32 fd;
	__aligned_u64 token;
};

#define LIVEUPDATE_SESSION_RETRIEVE_FD \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_RETRIEVE_FD)

/**
 * struct liveupdate_session_finish - ioctl(LIVEUPDATE_SESSION_FINISH)
 * @size:     sizeof(struct liveupdate_session_finish)
 * @reserved: must be zero
 *
 * Ends the hand-over of an incoming session: files that were not
 * retrieved are freed, retrieved files become ordinary files that may be
 * preserved again. A second call does nothing.
 *
 * Errors: EINVAL the session is outgoing, or @reserved is not zero.
 */
struct liveupdate_session_finish {
	__u32 size;
	__u32 reserved;
};

#define LIVEUPDATE_SESSION_FINISH \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_FINISH)

/**
 * struct liveupdate_session_get_name - ioctl(LIVEUPDATE_SESSION_GET_NAME)
 * @size:     sizeof(struct liveupdate_session_get_name)
 * @reserved: must be zero
 * @name:     output: the session's name, NUL-terminated
 *
 * Errors: EINVAL @reserved is not zero.
 */
struct liveupdate_session_get_name {
	__u32 size;
	__u32 reserved;
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];
};

#define LIVEUPDATE_SESSION_GET_NAME \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_GET_NAME)

/*
 * Extensions of this module: the orchestration that mainline leaves to
 * reboot(). Numbers from 0x80 on /dev/liveupdate are not used by mainline.
 */

/**
 * enum liveupdate_state - where the live update stands
 * @LIVEUPDATE_STATE_NORMAL:   sessions and files may be added and removed;
 *                             nothing is serialized yet
 * @LIVEUPDATE_STATE_PREPARED: every preserved file is serialized into KHO;
 *                             workloads still run and may still change data
 * @LIVEUPDATE_STATE_FROZEN:   the last state is recorded; sessions and files
 *                             can no longer be added or removed
 * @LIVEUPDATE_STATE_UPDATED:  this kernel took sessions over from the
 *                             previous one and they are not finished yet
 */
enum liveupdate_state {
	LIVEUPDATE_STATE_NORMAL = 0,
	LIVEUPDATE_STATE_PREPARED = 1,
	LIVEUPDATE_STATE_FROZEN = 2,
	LIVEUPDATE_STATE_UPDATED = 3,
};

/**
 * enum liveupdate_event - what LIVEUPDATE_IOCTL_SET_EVENT asks for
 * @LIVEUPDATE_EVENT_PREPARE: NORMAL to PREPARED
 * @LIVEUPDATE_EVENT_FREEZE:  PREPARED to FROZEN
 * @LIVEUPDATE_EVENT_CANCEL:  PREPARED or FROZEN back to NORMAL
 * @LIVEUPDATE_EVENT_FINISH:  UPDATED to NORMAL
 */
enum liveupdate_event {
	LIVEUPDATE_EVENT_PREPARE = 1,
	LIVEUPDATE_EVENT_FREEZE = 2,
	LIVEUPDATE_EVENT_CANCEL = 3,
	LIVEUPDATE_EVENT_FINISH = 4,
};

/* Commands of this module on /dev/liveupdate. */
enum {
	LIVEUPDATE_CMD_EXT_BASE = 0x80,
	LIVEUPDATE_CMD_GET_STATE = LIVEUPDATE_CMD_EXT_BASE,
	LIVEUPDATE_CMD_SET_EVENT = 0x81,
};

/* liveupdate_get_state.flags */
#define LIVEUPDATE_STATE_KHO_BOOT	(1U << 0)	/* booted by a KHO kexec */

/**
 * struct liveupdate_get_state - ioctl(LIVEUPDATE_IOCTL_GET_STATE)
 * @size:                 sizeof(struct liveupdate_get_state)
 * @state:                output: an enum liveupdate_state
 * @flags:                output: LIVEUPDATE_STATE_* flags
 * @format_version:       output: version of the hand-over format this
 *                        module writes and reads
 * @nr_sessions:          output: outgoing sessions
 * @nr_files:             output: files in outgoing sessions
 * @nr_incoming_sessions: output: sessions taken over and not finished
 * @nr_incoming_files:    output: files in those sessions
 * @nr_bytes:             output: memory serialized for the next kernel
 *                        (0 in NORMAL: PREPARE serializes)
 *
 * A snapshot; during an event the counts may be half-way.
 */
struct liveupdate_get_state {
	__u32 size;
	__u32 state;
	__u32 flags;
	__u32 format_version;
	__u32 nr_sessions;
	__u32 nr_files;
	__u32 nr_incoming_sessions;
	__u32 nr_incoming_files;
	__aligned_u64 nr_bytes;
};

#define LIVEUPDATE_IOCTL_GET_STATE \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_GET_STATE)

/**
 * struct liveupdate_set_event - ioctl(LIVEUPDATE_IOCTL_SET_EVENT)
 * @size:        sizeof(struct liveupdate_set_event)
 * @event:       input: an enum liveupdate_event
 * @nr_sessions: output (FINISH): sessions released without being retrieved
 * @nr_files:    output (FINISH): files released without being retrieved
 * @nr_bytes:    output (FINISH): bytes of memory those files returned
 * @err_token:   output, on failure: the token at fault: the file that
 *               failed, or (ENOENT) the missing dependency, or (ELOOP) a
 *               file in a dependency cycle
 * @err_session: output, on failure: the session of @err_token, or the
 *               name of the subsystem that failed (then @err_token is 0)
 *
 * Moves the state machine. PREPARE serializes every preserved file into
 * KHO; FREEZE records what can still change; CANCEL undoes both; FINISH
 * releases what the previous kernel handed over and nobody retrieved. A
 * failing event undoes what it did: the state stays where it was. The
 * struct is written back on failure too. Every transition emits a
 * KOBJ_CHANGE uevent with LIVEUPDATE_STATE= and LIVEUPDATE_EVENT=.
 *
 * Errors: EOPNOTSUPP unknown @event; EBUSY @event is not allowed in the
 * current state; ENOENT a file depends on a token that its session lacks;
 * ELOOP files depend on each other in a cycle; any error of a file's
 * handler or of a subsystem (ENOMEM, EIO, ...).
 */
struct liveupdate_set_event {
	__u32 size;
	__u32 event;
	__u32 nr_sessions;
	__u32 nr_files;
	__aligned_u64 nr_bytes;
	__aligned_u64 err_token;
	__u8 err_session[LIVEUPDATE_SESSION_NAME_LENGTH];
};

#define LIVEUPDATE_IOCTL_SET_EVENT \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SET_EVENT)

/* Commands of this module on a session fd. */
enum {
	LIVEUPDATE_CMD_SESSION_EXT_BASE = 0xC0,
	LIVEUPDATE_CMD_SESSION_PRESERVE_FD_DEPS = LIVEUPDATE_CMD_SESSION_EXT_BASE,
};

/* Most dependencies one file may name. */
#define LIVEUPDATE_MAX_DEPS	16

/**
 * struct liveupdate_session_preserve_fd_deps - ioctl(LIVEUPDATE_SESSION_PRESERVE_FD_DEPS)
 * @size:     sizeof(struct liveupdate_session_preserve_fd_deps)
 * @fd:       input: the fd to preserve
 * @token:    input: the caller's key for the file, unique in the session
 * @deps:     input: user pointer to @nr_deps __u64 tokens of files in the
 *            same session that this file depends on
 * @nr_deps:  input: at most LIVEUPDATE_MAX_DEPS
 * @reserved: must be zero
 *
 * LIVEUPDATE_SESSION_PRESERVE_FD with dependencies. The files named need
 * not be preserved yet: PREPARE and FREEZE check that they are (ENOENT
 * otherwise) and serialize them first; the next kernel retrieves them
 * before this file, and finishes this file before them.
 *
 * Errors: those of LIVEUPDATE_SESSION_PRESERVE_FD; EINVAL more than
 * LIVEUPDATE_MAX_DEPS tokens, a token named twice or the file's own,
 * or @reserved not zero; EFAULT @deps is not readable.
 */
struct liveupdate_session_preserve_fd_deps {
	__u32 size;
	__s32 fd;
	__aligned_u64 token;
	__aligned_u64 deps;
	__u32 nr_deps;
	__u32 reserved;
};

#define LIVEUPDATE_SESSION_PRESERVE_FD_DEPS \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_PRESERVE_FD_DEPS)

/*
 * In the session of a liveupdatefs instance that the previous kernel
 * carried, retrieved with LIVEUPDATE_IOCTL_RETRIEVE_SESSION: the token of
 * the instance's root directory. Each regular file's token is its inode
 * number in the previous kernel.
 */
#define LIVEUPDATE_FS_TREE_TOKEN	(~0ULL)

#endif /* _UAPI_LINUX_LIVEUPDATE_H */
