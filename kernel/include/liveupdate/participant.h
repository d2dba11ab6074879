/* SPDX-License-Identifier: GPL-2.0 */
/*
 * DOC: liveupdate participant API, for other modules
 *
 * Two kinds of participants take part in a live update:
 *
 * File handlers carry a kind of file across the kexec. Userspace preserves
 * the file in a session; the handler's callbacks then run at each step:
 * preserve (PRESERVE_FD, cheap checks), prepare (PREPARE: serialize into
 * KHO), freeze (FREEZE: the last changes), and in the next kernel retrieve
 * (RETRIEVE_FD) and finish (end of the hand-over). Each step has its undo:
 * unpreserve, cancel, unfreeze. A file may depend on other files of its
 * session, named by token when it is preserved; liveupdate checks them
 * at PREPARE and FREEZE (ENOENT names a missing token, ELOOP a cycle),
 * prepares and serializes dependencies first, retrieves them before the
 * files that need them, and finishes dependents first. A handler reaches
 * its dependencies with lu_file_dependency().
 *
 * Subsystems carry state of their own that belongs to no file: they get
 * prepare, freeze and cancel callbacks after (cancel: before) the files,
 * and find their data in the next kernel with lu_subsystem_incoming()
 * under the same name.
 *
 * Data: at prepare, a participant asks liveupdate for a buffer of up to
 * LU_MAX_DATA bytes (lu_file_data_alloc(), lu_subsystem_data_alloc()),
 * fills it, and may update it in place at freeze. liveupdate carries it
 * in its own table, under its checksum, and frees it on cancel. In the
 * next kernel the participant gets the checked bytes (struct lu_data),
 * never a physical address. Memory it preserves in KHO itself (large
 * arrays, folios) it names from its data and checks on its own.
 *
 * Callbacks run in process context under liveupdate's locks (retrieve
 * under its session's lock only, so retrieves of different sessions run
 * side by side; can_preserve under the handler registry's lock) and may
 * sleep; they must not call back into liveupdate except for
 * lu_file_dependency(). Registration pins nothing: liveupdate takes a
 * reference on @owner for every file a handler carries and, between
 * PREPARE and CANCEL or kexec, on every subsystem's @owner.
 */
#ifndef _LIVEUPDATE_PARTICIPANT_H
#define _LIVEUPDATE_PARTICIPANT_H

#include <linux/list.h>
#include <linux/types.h>

struct file;
struct module;
struct lu_file;
struct lu_session;

/* Longest handler or subsystem name, with its NUL. */
#define LU_COMPATIBLE_LENGTH	32
/* Most dependencies one file may name. */
#define LU_MAX_DEPS		16
/* Most bytes of data one participant hands over per file or subsystem. */
#define LU_MAX_DATA		4096

/**
 * struct lu_data - a participant's data, carried in liveupdate's table
 * @ptr:  old kernel: the buffer from lu_*_data_alloc(), which the
 *        participant fills; new kernel: the data as the previous kernel
 *        left it, checked (read only); NULL if there is none
 * @size: its bytes
 */
struct lu_data {
	void *ptr;
	u32 size;
};

/**
 * struct lu_file_handler - how one kind of file is carried over
 * @compatible:   name written into the hand-over data; the next kernel
 *                finds the handler by it. Change it when the format of
 *                the handler's data changes.
 * @owner:        the module that implements the handler
 * @can_preserve: whether @file is of this handler's kind
 * @get_id:       the identity of the object behind @file: two files with
 *                the same identity cannot be preserved twice; optional
 *                (default: the struct file)
 * @preserve:     PRESERVE_FD: check that the file can be carried and fix
 *                what must not change; cheap, nothing goes to KHO yet
 * @unpreserve:   undo @preserve
 * @prepare:      PREPARE: serialize the file into KHO while it is in use;
 *                fill its data (lu_file_data_alloc()) and set @lf->bytes
 *                (memory carried)
 * @cancel:       undo @prepare
 * @freeze:       FREEZE: record what changed since @prepare; optional
 * @unfreeze:     undo @freeze (CANCEL from FROZEN); optional
 * @retrieve:     new kernel: build the file from @lf->data and set
 *                @lf->file. Return -EIO if the data is damaged: the
 *                failure is final. Any other error is transient: the
 *                callback is called again on the next retrieval and must
 *                resume or start over, never hand out a partial file
 * @finish:       new kernel, end of the hand-over: unless @lf->state is
 *                LU_FILE_RETRIEVED, free what is left of the data (after
 *                a failed or partial retrieval too) and add the bytes
 *                freed to *@bytes. On a transient error (-ENOMEM) the
 *                data must be intact: liveupdate calls it again later
 * @list:         private to liveupdate
 */
struct lu_file_handler {
	const char *compatible;
	struct module *owner;
	bool (*can_preserve)(struct file *file);
	unsigned long (*get_id)(struct file *file);
	int (*preserve)(struct lu_file *lf);
	void (*unpreserve)(struct lu_file *lf);
	int (*prepare)(struct lu_file *lf);
	void (*cancel)(struct lu_file *lf);
	int (*freeze)(struct lu_file *lf);
	void (*unfreeze)(struct lu_file *lf);
	int (*retrieve)(struct lu_file *lf);
	int (*finish)(struct lu_file *lf, u64 *bytes);
	struct list_head list;
};

/**
 * enum lu_file_state - where a file is in its hand-over
 * @LU_FILE_PRESERVED: outgoing: preserved (PRESERVE_FD), nothing in KHO
 * @LU_FILE_PREPARED:  outgoing: @prepare succeeded (PREPARE)
 * @LU_FILE_FROZEN:    outgoing: @freeze succeeded (FREEZE)
 * @LU_FILE_PENDING:   incoming: not retrieved yet
 * @LU_FILE_RESTORING: incoming: a retrieval failed on a transient error
 *                     (-ENOMEM, ...); the handler kept its progress and
 *                     the next retrieval resumes it
 * @LU_FILE_RETRIEVED: incoming: @file is the restored file
 * @LU_FILE_FAILED:    incoming: the handler found the data damaged (-EIO);
 *                     every retrieval fails the same way, as in mainline
 *
 * Outgoing files go PRESERVED -> PREPARED -> FROZEN and back (CANCEL).
 * Incoming files go PENDING [-> RESTORING] -> RETRIEVED or FAILED; FINISH
 * ends every incoming file whatever its state.
 */
enum lu_file_state {
	LU_FILE_PRESERVED,
	LU_FILE_PREPARED,
	LU_FILE_FROZEN,
	LU_FILE_PENDING,
	LU_FILE_RESTORING,
	LU_FILE_RETRIEVED,
	LU_FILE_FAILED,
};

/**
 * struct lu_file - a file in a session, as its handler sees it
 * @token:    the caller's key, unique in the session
 * @file:     outgoing: the preserved file (liveupdate holds a reference);
 *            incoming: the retrieved file, or NULL before retrieval
 * @data:     the handler's data (see struct lu_data)
 * @bytes:    memory serialized for the file
 * @priv:     the handler's own state
 * @deps:     tokens of the files this one depends on (read only)
 * @nr_deps:  entries in @deps
 * @state:    where the file is in its hand-over (read only)
 *
 * The members below are private to liveupdate.
 * @node:       entry in the session's file list
 * @handler:    the handler; NULL for an incoming file whose handler is
 *              not registered (yet)
 * @session:    the session that holds the file
 * @compatible: the handler's name (incoming: from the hand-over data)
 * @err:        LU_FILE_FAILED: the error every retrieval returns
 * @mark:       dependency walks: the walk's generation and whether the
 *              file is on its stack or done
 * @indexed:    incoming, retrieved: @file is in liveupdate's busy index
 */
struct lu_file {
	u64 token;
	struct file *file;
	struct lu_data data;
	u64 bytes;
	void *priv;
	u64 *deps;
	unsigned int nr_deps;
	enum lu_file_state state;

	struct list_head node;
	const struct lu_file_handler *handler;
	struct lu_session *session;
	char compatible[LU_COMPATIBLE_LENGTH];
	int err;
	unsigned int mark;
	bool indexed;
};

int lu_register_file_handler(struct lu_file_handler *handler);
void lu_unregister_file_handler(struct lu_file_handler *handler);
struct file *lu_file_dependency(struct lu_file *lf, u64 token);
void *lu_file_data_alloc(struct lu_file *lf, size_t size);

/**
 * struct lu_subsystem - a participant with state of its own
 * @name:     unique name (under LU_COMPATIBLE_LENGTH bytes); the next
 *            kernel's subsystem of this name receives the data
 * @owner:    the module that implements it
 * @prepare:  PREPARE, after the files: serialize, filling @data
 *            (lu_subsystem_data_alloc()) if there is anything to hand over
 * @freeze:   FREEZE, after the files; may update @data; optional
 * @cancel:   undo @prepare (and @freeze); liveupdate frees @data after
 * @finish:   new kernel, end of the hand-over (FINISH, or the last session
 *            finished): free what @in names, if anything; @in is gone
 *            after
 * @data:     old kernel: the data to hand over
 * @list:     private to liveupdate
 * @prepared: private: @prepare succeeded and was not cancelled
 * @frozen:   private: @freeze succeeded since @prepare (it runs once)
 */
struct lu_subsystem {
	const char *name;
	struct module *owner;
	int (*prepare)(struct lu_subsystem *ss);
	int (*freeze)(struct lu_subsystem *ss);
	void (*cancel)(struct lu_subsystem *ss);
	void (*finish)(struct lu_subsystem *ss, const struct lu_data *in);
	struct lu_data data;
	struct list_head list;
	bool prepared;
	bool frozen;
};

int lu_register_subsystem(struct lu_subsystem *ss);
void lu_unregister_subsystem(struct lu_subsystem *ss);
void *lu_subsystem_data_alloc(struct lu_subsystem *ss, size_t size);
int lu_subsystem_incoming(struct lu_subsystem *ss, struct lu_data *in);

#endif /* _LIVEUPDATE_PARTICIPANT_H */
