// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate files and their handlers
 *
 * A handler carries one kind of file (memfd for now). Preservation does
 * all fallible work up front; the reboot notifier only asks each handler
 * to record what may still change. A file may be carried by one session
 * at a time: lu.busy_files maps its inode to its struct lu_file, from
 * preservation until unpreservation, and from retrieval until finish.
 *
 * All functions here run under lu.lock.
 */
#include <linux/cleanup.h>
#include <linux/file.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "lu_internal.h"

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

	retain_and_null_ptr(file);
	list_add_tail(&lf->node, &session->files);
	session->nr_files++;
	lu.nr_out_files++;
	return 0;

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
 * lu_file_freeze_all - record the last state of an outgoing session's files
 * @session: the session
 */
void lu_file_freeze_all(struct lu_session *session)
{
	struct lu_file *lf;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry(lf, &session->files, node)
		lf->handler->freeze(lf);
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
 * @session: the session
 *
 * Retrieved files become ordinary files; the others are discarded and
 * their memory returned.
 */
void lu_file_finish_all(struct lu_session *session)
{
	struct lu_file *lf, *next;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry_safe(lf, next, &session->files, node) {
		if (lf->file) {
			xa_erase(&lu.busy_files, lu_busy_key(lf->file));
			fput(lf->file);
		} else {
			lf->handler->discard(lf);
		}
		list_del(&lf->node);
		kfree(lf);
	}
	session->nr_files = 0;
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
