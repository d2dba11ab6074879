// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate files and their handlers
 *
 * A handler carries one kind of file (memfd for now). A file goes
 * through the handler's steps in this order, each undone in reverse:
 * preserve (PRESERVE_FD: cheap checks), prepare (PREPARE: serialize into
 * KHO), freeze (FREEZE: what changed since). A file preserved while the
 * state is PREPARED is prepared at once. A file may be carried by one
 * session at a time: lu.busy_files maps its inode to its struct lu_file,
 * from preservation until unpreservation, and from retrieval until finish.
 *
 * All functions here run under lu.lock.
 */
#include <linux/cleanup.h>
#include <linux/file.h>
#include <linux/moduleparam.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "lu_internal.h"

/* For the selftests only: make PREPARE or FREEZE fail at one token. */
static unsigned long long test_fail_prepare;
module_param(test_fail_prepare, ullong, 0600);
MODULE_PARM_DESC(test_fail_prepare, "testing: PREPARE fails with EIO at this token (0: off)");
static unsigned long long test_fail_freeze;
module_param(test_fail_freeze, ullong, 0600);
MODULE_PARM_DESC(test_fail_freeze, "testing: FREEZE fails with EIO at this token (0: off)");

static const struct lu_file_handler *const lu_handlers[] = {
	&lu_memfd_handler,
};

static const struct lu_file_handler *lu_handler_for_file(struct file *file)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(lu_handlers); i++)
		if (lu_handlers[i]->can_preserve(file))
			return lu_handlers[i];
	return NULL;
}

static const struct lu_file_handler *lu_handler_by_name(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(lu_handlers); i++)
		if (!strcmp(lu_handlers[i]->compatible, name))
			return lu_handlers[i];
	return NULL;
}

static struct lu_file *lu_file_find(struct lu_session *session, u64 token)
{
	struct lu_file *lf;

	list_for_each_entry(lf, &session->files, node)
		if (lf->token == token)
			return lf;
	return NULL;
}

static struct lu_file *lu_file_new(u64 token,
				   const struct lu_file_handler *handler)
{
	struct lu_file *lf = kzalloc_obj(*lf, GFP_KERNEL);

	if (lf) {
		lf->token = token;
		lf->handler = handler;
	}
	return lf;
}

static unsigned long lu_busy_key(struct file *file)
{
	return (unsigned long)file_inode(file);
}

static int lu_file_prepare(struct lu_file *lf)
{
	int err;

	if (test_fail_prepare && lf->token == test_fail_prepare)
		return -EIO;
	err = lf->handler->prepare(lf);
	if (err)
		return err;
	lf->prepared = true;
	lu.nr_out_bytes += lf->bytes;
	return 0;
}

/* Freezing may serialize more (pages written into holes): count them. */
static int lu_file_freeze(struct lu_file *lf)
{
	u64 bytes = lf->bytes;
	int err = lf->handler->freeze(lf);

	lu.nr_out_bytes += lf->bytes - bytes;
	return err;
}

static void lu_file_unfreeze(struct lu_file *lf)
{
	if (lf->frozen && lf->handler->unfreeze)
		lf->handler->unfreeze(lf);
	lf->frozen = false;
}

static void lu_file_cancel(struct lu_file *lf)
{
	lu_file_unfreeze(lf);
	if (lf->prepared) {
		lu.nr_out_bytes -= lf->bytes;
		lf->handler->cancel(lf);
	}
	lf->prepared = false;
	lf->bytes = 0;
	lf->data = 0;
}

/**
 * lu_file_preserve - preserve the file behind @fd in an outgoing session
 * @session: the session
 * @fd:      the caller's fd
 * @token:   the caller's key
 *
 * Checks in mainline's order: token in use EEXIST, table space, bad fd
 * EBADF, no handler ENOENT, file carried already EBUSY, then the
 * handler's own errors.
 */
int lu_file_preserve(struct lu_session *session, int fd, u64 token)
{
	const struct lu_file_handler *handler;
	struct lu_file *lf;
	int err;

	lockdep_assert_held(&lu.lock);
	if (lu_file_find(session, token))
		return -EEXIST;
	err = lu_kho_reserve(lu.nr_out_sessions, lu.nr_out_files + 1);
	if (err)
		return err;

	struct file *file __free(fput) = fget(fd);
	if (!file)
		return -EBADF;
	handler = lu_handler_for_file(file);
	if (!handler)
		return -ENOENT;

	lf = lu_file_new(token, handler);
	if (!lf)
		return -ENOMEM;
	lf->file = file;
	err = xa_insert(&lu.busy_files, lu_busy_key(file), lf, GFP_KERNEL);
	if (err)
		goto err_free;
	err = handler->preserve(lf);
	if (err)
		goto err_busy;
	if (lu.state == LIVEUPDATE_STATE_PREPARED) {
		err = lu_file_prepare(lf);
		if (err)
			goto err_unpreserve;
	}

	retain_and_null_ptr(file);
	list_add_tail(&lf->node, &session->files);
	session->nr_files++;
	lu.nr_out_files++;
	return 0;

err_unpreserve:
	handler->unpreserve(lf);
err_busy:
	xa_erase(&lu.busy_files, lu_busy_key(file));
err_free:
	kfree(lf);
	return err;
}

/**
 * lu_file_unpreserve_all - release every file of an outgoing session
 * @session: the session, about to be freed
 */
void lu_file_unpreserve_all(struct lu_session *session)
{
	struct lu_file *lf, *next;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry_safe(lf, next, &session->files, node) {
		lu_file_cancel(lf);
		lf->handler->unpreserve(lf);
		xa_erase(&lu.busy_files, lu_busy_key(lf->file));
		fput(lf->file);
		list_del(&lf->node);
		kfree(lf);
		lu.nr_out_files--;
	}
	session->nr_files = 0;
}

/**
 * lu_file_prepare_all - serialize an outgoing session's files into KHO
 * @session:      the session
 * @failed_token: set to the token of the file that failed
 *
 * Files prepared already (preserved while PREPARED) are skipped. On
 * failure the files this call prepared are cancelled again.
 */
int lu_file_prepare_all(struct lu_session *session, u64 *failed_token)
{
	struct lu_file *lf;
	int err;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry(lf, &session->files, node) {
		if (lf->prepared)
			continue;
		err = lu_file_prepare(lf);
		if (err) {
			*failed_token = lf->token;
			list_for_each_entry_continue_reverse(lf, &session->files,
							     node)
				lu_file_cancel(lf);
			return err;
		}
	}
	return 0;
}

/**
 * lu_file_cancel_all - undo the freeze and prepare steps of a session
 * @session: the session; its files stay preserved
 */
void lu_file_cancel_all(struct lu_session *session)
{
	struct lu_file *lf;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry_reverse(lf, &session->files, node)
		lu_file_cancel(lf);
}

/**
 * lu_file_freeze_all - record the last state of a prepared session's files
 * @session:      the session
 * @failed_token: set to the token of the file that failed
 *
 * On failure the files this call froze are unfrozen again.
 */
int lu_file_freeze_all(struct lu_session *session, u64 *failed_token)
{
	struct lu_file *lf;
	int err;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry(lf, &session->files, node) {
		if (lf->frozen)
			continue;
		if (WARN_ON_ONCE(!lf->prepared))
			err = -EINVAL;
		else if (test_fail_freeze && lf->token == test_fail_freeze)
			err = -EIO;
		else
			err = lu_file_freeze(lf);
		if (err) {
			*failed_token = lf->token;
			list_for_each_entry_continue_reverse(lf, &session->files,
							     node)
				lu_file_unfreeze(lf);
			return err;
		}
		lf->frozen = true;
	}
	return 0;
}

/**
 * lu_file_unfreeze_all - undo the freeze step of a session's files
 * @session: the session
 */
void lu_file_unfreeze_all(struct lu_session *session)
{
	struct lu_file *lf;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry_reverse(lf, &session->files, node)
		lu_file_unfreeze(lf);
}

/**
 * lu_file_retrieve - get the file preserved under @token
 * @session: an incoming session
 * @token:   the token
 * @filep:   a new reference to the file
 *
 * The first call builds the file; later calls return the same file. A
 * failed retrieval keeps what it restored and resumes on the next call.
 */
int lu_file_retrieve(struct lu_session *session, u64 token,
		     struct file **filep)
{
	struct lu_file *lf;
	int err;

	lockdep_assert_held(&lu.lock);
	lf = lu_file_find(session, token);
	if (!lf)
		return -ENOENT;
	if (!lf->file) {
		err = lf->handler->retrieve(lf);
		if (err)
			return err;
		/* The file is new, so its inode cannot be busy. */
		err = xa_insert(&lu.busy_files, lu_busy_key(lf->file), lf,
				GFP_KERNEL);
		if (err) {
			fput(lf->file);
			lf->file = NULL;
			return err;
		}
	}
	*filep = get_file(lf->file);
	return 0;
}

/**
 * lu_file_finish_all - end the hand-over of an incoming session's files
 * @session:    the session
 * @nr_dropped: incremented for each file that was never retrieved
 *
 * Retrieved files become ordinary files; the others are freed.
 *
 * Return: the bytes of memory that the files never retrieved returned.
 */
u64 lu_file_finish_all(struct lu_session *session, unsigned int *nr_dropped)
{
	struct lu_file *lf, *next;
	u64 bytes = 0;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry_safe_reverse(lf, next, &session->files, node) {
		if (lf->file) {
			xa_erase(&lu.busy_files, lu_busy_key(lf->file));
			lf->handler->finish(lf);
			fput(lf->file);
		} else {
			bytes += lf->handler->finish(lf);
			(*nr_dropped)++;
		}
		list_del(&lf->node);
		kfree(lf);
		lu.nr_in_files--;
	}
	session->nr_files = 0;
	return bytes;
}

/**
 * lu_file_add_incoming - add a file read from the hand-over data
 * @session:    its incoming session
 * @token:      its token
 * @compatible: its handler's name, NUL-terminated
 * @data:       physical address of the handler's block
 *
 * Return: 0, -ENOENT for an unknown handler, or -ENOMEM.
 */
int lu_file_add_incoming(struct lu_session *session, u64 token,
			 const char *compatible, phys_addr_t data)
{
	const struct lu_file_handler *handler;
	struct lu_file *lf;

	lockdep_assert_held(&lu.lock);
	handler = lu_handler_by_name(compatible);
	if (!handler)
		return -ENOENT;
	lf = lu_file_new(token, handler);
	if (!lf)
		return -ENOMEM;
	lf->data = data;
	list_add_tail(&lf->node, &session->files);
	session->nr_files++;
	lu.nr_in_files++;
	return 0;
}

/**
 * lu_file_compatible_known - whether a handler of this name exists
 * @compatible: a NUL-terminated name
 */
bool lu_file_compatible_known(const char *compatible)
{
	return lu_handler_by_name(compatible);
}
