// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate files and their handlers
 *
 * A handler (memfd, or one registered by another module) carries one kind
 * of file. A file goes through the handler's steps in this order, each
 * undone in reverse: preserve (PRESERVE_FD: cheap checks), prepare
 * (PREPARE: serialize into KHO), freeze (FREEZE: what changed since). A
 * file preserved while the state is PREPARED is prepared at once. A file
 * may be carried by one session at a time: lu.busy_files maps its
 * identity (the handler's get_id(), e.g. a memfd's inode) to its struct lu_file, from preservation until unpreservation, and from
 * retrieval until finish.
 *
 * Dependencies: a file names tokens of its session that it needs. Before
 * PREPARE and FREEZE serialize a session, lu_file_order() checks them and
 * sorts the session's files so that dependencies come first; the next
 * kernel retrieves a file's dependencies before the file, and finishes a
 * session's files in reverse order. An incoming file whose handler is not
 * registered yet waits for it (retrieval fails with ENOPKG until then).
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

static struct lu_file *lu_file_find(struct lu_session *session, u64 token)
{
	struct lu_file *lf;

	list_for_each_entry(lf, &session->files, node)
		if (lf->token == token)
			return lf;
	return NULL;
}

static struct lu_file *lu_file_new(struct lu_session *session, u64 token,
				   const char *compatible, const u64 *deps,
				   unsigned int nr_deps)
{
	struct lu_file *lf = kzalloc_obj(*lf, GFP_KERNEL);

	if (!lf)
		return NULL;
	if (nr_deps) {
		lf->deps = kmemdup_array(deps, nr_deps, sizeof(*deps),
					 GFP_KERNEL);
		if (!lf->deps) {
			kfree(lf);
			return NULL;
		}
	}
	lf->nr_deps = nr_deps;
	lf->token = token;
	lf->session = session;
	strscpy(lf->compatible, compatible, sizeof(lf->compatible));
	return lf;
}

static void lu_file_free(struct lu_file *lf)
{
	list_del(&lf->node);
	lf->session->nr_files--;
	if (lf->handler)
		lu_handler_put(lf->handler);
	kfree(lf->deps);
	kfree(lf);
}

/* Refuses a dependency list that names the file itself or a token twice. */
static int lu_file_check_deps(u64 token, const u64 *deps, unsigned int nr)
{
	unsigned int i, j;

	if (nr > LU_MAX_DEPS)
		return -EINVAL;
	for (i = 0; i < nr; i++) {
		if (deps[i] == token)
			return -EINVAL;
		for (j = 0; j < i; j++)
			if (deps[i] == deps[j])
				return -EINVAL;
	}
	return 0;
}

/* What makes two files the same object: the handler says, else the file. */
static unsigned long lu_busy_key(const struct lu_file_handler *handler,
				 struct file *file)
{
	return handler->get_id ? handler->get_id(file) : (unsigned long)file;
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
	int err;

	if (!lf->handler->freeze)
		return 0;
	err = lf->handler->freeze(lf);
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
 * @deps:    tokens of the session's files this one depends on
 * @nr_deps: entries in @deps
 *
 * Checks in mainline's order: token in use EEXIST, table space, bad fd
 * EBADF, no handler ENOENT, file carried already EBUSY, then the
 * handler's own errors. A bad dependency list is EINVAL.
 */
int lu_file_preserve(struct lu_session *session, int fd, u64 token,
		     const u64 *deps, unsigned int nr_deps)
{
	struct lu_file_handler *handler;
	struct lu_file *lf;
	int err;

	lockdep_assert_held(&lu.lock);
	if (lu_file_find(session, token))
		return -EEXIST;
	err = lu_file_check_deps(token, deps, nr_deps);
	if (err)
		return err;
	err = lu_kho_reserve(0, 1, nr_deps, 0);
	if (err)
		return err;

	struct file *file __free(fput) = fget(fd);
	if (!file)
		return -EBADF;
	handler = lu_handler_for_file(file);
	if (!handler)
		return -ENOENT;
	lf = lu_file_new(session, token, handler->compatible, deps, nr_deps);
	if (!lf) {
		lu_handler_put(handler);
		return -ENOMEM;
	}
	lf->handler = handler;
	lf->file = file;
	list_add_tail(&lf->node, &session->files);
	session->nr_files++;
	err = xa_insert(&lu.busy_files, lu_busy_key(handler, file), lf, GFP_KERNEL);
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
	lu.nr_out_files++;
	lu.nr_out_deps += nr_deps;
	return 0;

err_unpreserve:
	handler->unpreserve(lf);
err_busy:
	xa_erase(&lu.busy_files, lu_busy_key(handler, file));
err_free:
	lu_file_free(lf);
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
	list_for_each_entry_safe_reverse(lf, next, &session->files, node) {
		lu_file_cancel(lf);
		lf->handler->unpreserve(lf);
		xa_erase(&lu.busy_files, lu_busy_key(lf->handler, lf->file));
		fput(lf->file);
		lu.nr_out_files--;
		lu.nr_out_deps -= lf->nr_deps;
		lu_file_free(lf);
	}
}

/* Whether every dependency of @lf is in @list. */
static bool lu_file_deps_in(struct lu_file *lf, struct list_head *list)
{
	struct lu_file *dep;
	unsigned int i;
	bool found;

	for (i = 0; i < lf->nr_deps; i++) {
		found = false;
		list_for_each_entry(dep, list, node)
			if (dep->token == lf->deps[i])
				found = true;
		if (!found)
			return false;
	}
	return true;
}

/**
 * lu_file_order - check a session's dependencies and sort its files
 * @session:   an outgoing session
 * @bad_token: on failure, the missing token or one in a cycle
 *
 * Moves every file after the files it depends on, keeping the order of
 * preservation otherwise.
 *
 * Return: 0, -ENOENT for a token that no file of the session has, or
 * -ELOOP for a cycle.
 */
int lu_file_order(struct lu_session *session, u64 *bad_token)
{
	struct lu_file *lf, *next;
	LIST_HEAD(sorted);
	unsigned int i;
	bool progress;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry(lf, &session->files, node) {
		for (i = 0; i < lf->nr_deps; i++) {
			if (!lu_file_find(session, lf->deps[i])) {
				*bad_token = lf->deps[i];
				return -ENOENT;
			}
		}
	}
	do {
		progress = false;
		list_for_each_entry_safe(lf, next, &session->files, node) {
			if (lu_file_deps_in(lf, &sorted)) {
				list_move_tail(&lf->node, &sorted);
				progress = true;
			}
		}
	} while (progress);
	if (!list_empty(&session->files)) {
		*bad_token = list_first_entry(&session->files, struct lu_file,
					      node)->token;
		list_splice_tail_init(&sorted, &session->files);
		return -ELOOP;
	}
	list_splice(&sorted, &session->files);
	return 0;
}

static struct lu_file *lu_file_find_dep(struct lu_file *lf, u64 token)
{
	unsigned int i;

	for (i = 0; i < lf->nr_deps; i++)
		if (lf->deps[i] == token)
			return lu_file_find(lf->session, token);
	return NULL;
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

static int lu_file_retrieve_one(struct lu_file *lf)
{
	unsigned int i;
	int err;

	if (lf->file)
		return 0;
	if (lf->retrieving)
		return -ELOOP;
	if (!lf->handler) {
		lf->handler = lu_handler_get(lf->compatible);
		if (!lf->handler) {
			lu_err("token %llu: no handler \"%s\" registered\n",
			       lf->token, lf->compatible);
			return -ENOPKG;
		}
	}
	/* Dependencies first: the handler builds on them. */
	lf->retrieving = true;
	for (i = 0; i < lf->nr_deps; i++) {
		struct lu_file *dep = lu_file_find(lf->session, lf->deps[i]);

		err = dep ? lu_file_retrieve_one(dep) : -ENOENT;
		if (err)
			goto out;
	}
	err = lf->handler->retrieve(lf);
	if (err)
		goto out;
	/* The file is new, so its inode cannot be busy. */
	err = xa_insert(&lu.busy_files, lu_busy_key(lf->handler, lf->file), lf, GFP_KERNEL);
	if (err) {
		fput(lf->file);
		lf->file = NULL;
	}
out:
	lf->retrieving = false;
	return err;
}

/**
 * lu_file_retrieve - get the file preserved under @token
 * @session: an incoming session
 * @token:   the token
 * @filep:   a new reference to the file
 *
 * The first call builds the file, and the files it depends on; later
 * calls return the same file. A failed retrieval keeps what it restored
 * and resumes on the next call.
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
	err = lu_file_retrieve_one(lf);
	if (err)
		return err;
	*filep = get_file(lf->file);
	return 0;
}

/**
 * lu_file_dependency - a file that @lf depends on
 * @lf:    the file whose handler asks
 * @token: one of @lf's dependencies
 *
 * In the old kernel, the preserved file; in the new one, the retrieved
 * file (liveupdate retrieves dependencies before the files that need
 * them). No reference is taken: the file lives at least as long as @lf's
 * hand-over. Callable from a handler's callbacks only.
 *
 * Return: the file, or ERR_PTR(-ENOENT) if @token is not a dependency of
 * @lf or not in its session.
 */
struct file *lu_file_dependency(struct lu_file *lf, u64 token)
{
	struct lu_file *dep;

	lockdep_assert_held(&lu.lock);
	dep = lu_file_find_dep(lf, token);
	if (!dep || !dep->file)
		return ERR_PTR(-ENOENT);
	return dep->file;
}
EXPORT_SYMBOL_GPL(lu_file_dependency);

/**
 * lu_file_finish_all - end the hand-over of an incoming session's files
 * @session:    the session
 * @nr_dropped: incremented for each file that was never retrieved
 *
 * Retrieved files become ordinary files; the others are freed, dependent
 * files before their dependencies. A file whose handler never registered
 * cannot be freed: its memory stays reserved until the next boot.
 *
 * Return: the bytes of memory that the files never retrieved returned.
 */
u64 lu_file_finish_all(struct lu_session *session, unsigned int *nr_dropped)
{
	struct lu_file *lf, *next;
	u64 bytes = 0;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry_safe_reverse(lf, next, &session->files, node) {
		if (!lf->handler)
			lf->handler = lu_handler_get(lf->compatible);
		if (lf->file) {
			xa_erase(&lu.busy_files, lu_busy_key(lf->handler, lf->file));
			lf->handler->finish(lf);
			fput(lf->file);
		} else if (lf->handler) {
			bytes += lf->handler->finish(lf);
			(*nr_dropped)++;
		} else {
			pr_warn("liveupdate: session %s, token %llu: no handler \"%s\", its memory stays reserved\n",
				session->name, lf->token, lf->compatible);
			(*nr_dropped)++;
		}
		lu.nr_in_files--;
		lu_file_free(lf);
	}
	return bytes;
}

/**
 * lu_file_add_incoming - add a file read from the hand-over data
 * @session:    its incoming session
 * @token:      its token
 * @compatible: its handler's name, NUL-terminated
 * @data:       physical address of the handler's block
 * @deps:       its dependencies' tokens
 * @nr_deps:    entries in @deps
 *
 * The handler is looked up now and again at retrieval: it may be
 * registered later.
 *
 * Return: 0 or -ENOMEM.
 */
int lu_file_add_incoming(struct lu_session *session, u64 token,
			 const char *compatible, phys_addr_t data,
			 const u64 *deps, unsigned int nr_deps)
{
	struct lu_file *lf;

	lockdep_assert_held(&lu.lock);
	lf = lu_file_new(session, token, compatible, deps, nr_deps);
	if (!lf)
		return -ENOMEM;
	lf->handler = lu_handler_get(compatible);
	lf->data = data;
	list_add_tail(&lf->node, &session->files);
	session->nr_files++;
	lu.nr_in_files++;
	return 0;
}
