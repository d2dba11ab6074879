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
 * identity (the handler's get_id(), e.g. a memfd's inode) to its struct
 * lu_file, from preservation until unpreservation, and from retrieval
 * until finish.
 *
 * Each file's state (enum lu_file_state) says what was done to it:
 *
 *   outgoing: PRESERVED --prepare--> PREPARED --freeze--> FROZEN
 *             (cancel and unfreeze go back; the reboot notifier freezes
 *             a FROZEN file once more to carry later changes)
 *   incoming: PENDING --retrieve--> RETRIEVED
 *                 |  \--damaged (-EIO)--> FAILED (sticky error)
 *                 \--transient error--> RESTORING --retrieve--> ...
 *
 * Creation follows reserve, work, publish: the token's slot in the
 * session's index and the busy entry are reserved, the handler works, and
 * only then is the file published in its session; a failure undoes
 * exactly the steps done, so a failed PRESERVE_FD leaves no trace.
 *
 * Dependencies: a file names tokens of its session that it needs. Before
 * PREPARE and FREEZE serialize a session, lu_file_order() checks them and
 * sorts the session's files so that dependencies come first; the next
 * kernel retrieves a file's dependencies before the file, and finishes a
 * session's files in reverse order. Both walk the dependencies
 * iteratively (lu_file_walk()), so any chain fits in the kernel stack.
 * An incoming file whose handler is not registered yet waits for it
 * (retrieval fails with ENOPKG until then).
 *
 * The functions here run under lu.lock, except for an incoming session's
 * retrieval, which holds only the session's lock (DOC: locking).
 */
#include <linux/cleanup.h>
#include <linux/file.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "lu_internal.h"

static struct lu_file *lu_file_find(struct lu_session *session, u64 token)
{
	return xa_load(&session->tokens, token);
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

/* Frees a file that was never published in its session. */
static void lu_file_destroy(struct lu_file *lf)
{
	if (lf->state >= LU_FILE_PENDING)
		kfree(lf->data.ptr);
	else
		lu_data_free(&lf->data);
	if (lf->handler)
		lu_handler_put(lf->handler);
	kfree(lf->deps);
	kfree(lf);
}

/* Puts @lf, already in its session's token index, on the session's list. */
static void lu_file_publish(struct lu_file *lf)
{
	list_add_tail(&lf->node, &lf->session->files);
	lf->session->nr_files++;
}

static void lu_file_free(struct lu_file *lf)
{
	xa_erase(&lf->session->tokens, lf->token);
	list_del(&lf->node);
	lf->session->nr_files--;
	lu_file_destroy(lf);
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

	if (WARN_ON_ONCE(lf->state != LU_FILE_PRESERVED))
		return -EINVAL;
	if (lu_debug_fail_prepare(lf->token))
		return -EIO;
	err = lf->handler->prepare(lf);
	if (err) {
		lu_data_free(&lf->data);
		return err;
	}
	lf->state = LU_FILE_PREPARED;
	lu.nr_out_bytes += lf->bytes;
	return 0;
}

/*
 * FREEZE, and again in the reboot notifier for a file frozen already:
 * freezing records what changed since (pages written into holes, the
 * position, seals), so a second call carries the changes made after
 * FREEZE. A failure leaves what the last successful call published.
 */
static int lu_file_freeze(struct lu_file *lf)
{
	u64 bytes = lf->bytes;
	int err = 0;

	if (WARN_ON_ONCE(lf->state != LU_FILE_PREPARED &&
			 lf->state != LU_FILE_FROZEN))
		return -EINVAL;
	if (lu_debug_fail_freeze(lf->token))
		return -EIO;
	if (lf->handler->freeze)
		err = lf->handler->freeze(lf);
	lu.nr_out_bytes += lf->bytes - bytes;
	if (!err)
		lf->state = LU_FILE_FROZEN;
	return err;
}

static void lu_file_unfreeze(struct lu_file *lf)
{
	if (lf->state != LU_FILE_FROZEN)
		return;
	if (lf->handler->unfreeze)
		lf->handler->unfreeze(lf);
	lf->state = LU_FILE_PREPARED;
}

static void lu_file_cancel(struct lu_file *lf)
{
	lu_file_unfreeze(lf);
	if (lf->state != LU_FILE_PREPARED)
		return;
	lu.nr_out_bytes -= lf->bytes;
	lf->handler->cancel(lf);
	lu_data_free(&lf->data);
	lf->state = LU_FILE_PRESERVED;
	lf->bytes = 0;
}

/**
 * lu_file_data_alloc - the buffer for a file's data in the next kernel
 * @lf:   the file, in its handler's prepare callback
 * @size: its bytes, 1 to LU_MAX_DATA
 *
 * liveupdate carries the buffer in its table, under its checksum, and
 * frees it when the prepare fails or is cancelled. The handler may change
 * the bytes until the kexec (its freeze callback). In the next kernel it
 * finds them in @lf->data.
 *
 * Return: the zeroed buffer, or an ERR_PTR(): -EINVAL outside prepare or
 * for a bad size, -EBUSY for a second buffer, -ENOSPC, -ENOMEM.
 */
void *lu_file_data_alloc(struct lu_file *lf, size_t size)
{
	lockdep_assert_held(&lu.lock);
	if (lf->state != LU_FILE_PRESERVED)
		return ERR_PTR(-EINVAL);
	return lu_data_alloc(&lf->data, size);
}
EXPORT_SYMBOL_GPL(lu_file_data_alloc);

/* What every new outgoing file needs first: its token free, room in the table. */
static int lu_file_check_new(struct lu_session *session, u64 token,
			     const u64 *deps, unsigned int nr_deps)
{
	int err;

	lockdep_assert_held(&lu.lock);
	if (lu_file_find(session, token))
		return -EEXIST;
	err = lu_file_check_deps(token, deps, nr_deps);
	if (err)
		return err;
	return lu_kho_reserve(0, 1, nr_deps, 0, 0);
}

/*
 * Adds @file, checked by lu_file_check_new(): everything is reserved
 * before the handler runs, and the file is published in the session
 * last, so a failure leaves no trace (the handler reference stays the
 * caller's).
 */
static int lu_file_insert(struct lu_session *session, struct file *file,
			  struct lu_file_handler *handler, u64 token,
			  const u64 *deps, unsigned int nr_deps)
{
	unsigned long key;
	struct lu_file *lf;
	int err;

	lf = lu_file_new(session, token, handler->compatible, deps, nr_deps);
	if (!lf)
		return -ENOMEM;
	lf->file = file;
	lf->state = LU_FILE_PRESERVED;
	key = lu_busy_key(handler, file);
	err = xa_reserve(&session->tokens, token, GFP_KERNEL);
	if (err)
		goto err_destroy;
	err = xa_insert(&lu.busy_files, key, lf, GFP_KERNEL);
	if (err)
		goto err_token;
	lf->handler = handler;
	err = handler->preserve(lf);
	if (err)
		goto err_busy;
	if (lu.state == LIVEUPDATE_STATE_PREPARED) {
		err = lu_file_prepare(lf);
		if (err)
			goto err_unpreserve;
	}

	get_file(file);
	/* The slot is reserved: storing cannot fail. */
	xa_store(&session->tokens, token, lf, GFP_KERNEL);
	lu_file_publish(lf);
	lu.nr_out_files++;
	lu.nr_out_deps += nr_deps;
	return 0;

err_unpreserve:
	handler->unpreserve(lf);
err_busy:
	lf->handler = NULL;
	xa_erase(&lu.busy_files, key);
err_token:
	xa_release(&session->tokens, token);
err_destroy:
	lu_file_destroy(lf);
	return err;
}

/**
 * lu_file_preserve_file - preserve @file in an outgoing session
 * @session: the session
 * @file:    the file; the session takes a reference on success
 * @handler: its handler, with a reference the session keeps on success
 * @token:   the caller's key
 * @deps:    tokens of the session's files this one depends on
 * @nr_deps: entries in @deps
 *
 * A file preserved while PREPARED is prepared at once.
 *
 * Return: 0, -EEXIST for a token in use, -EBUSY for a file carried
 * already, -EINVAL for a bad dependency list, or the handler's error.
 */
int lu_file_preserve_file(struct lu_session *session, struct file *file,
			  struct lu_file_handler *handler, u64 token,
			  const u64 *deps, unsigned int nr_deps)
{
	return lu_file_check_new(session, token, deps, nr_deps) ?:
	       lu_file_insert(session, file, handler, token, deps, nr_deps);
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
 *
 * Return: 0 or a negative errno, as above.
 */
int lu_file_preserve(struct lu_session *session, int fd, u64 token,
		     const u64 *deps, unsigned int nr_deps)
{
	struct lu_file_handler *handler;
	int err;

	err = lu_file_check_new(session, token, deps, nr_deps);
	if (err)
		return err;

	struct file *file __free(fput) = fget(fd);
	if (!file)
		return -EBADF;
	handler = lu_handler_for_file(file);
	if (!handler)
		return -ENOENT;
	err = lu_file_insert(session, file, handler, token, deps, nr_deps);
	if (err)
		lu_handler_put(handler);
	return err;
}

/**
 * lu_file_unpreserve_all - release every file of an outgoing session
 * @session: the session, about to be freed, or an instance's being cancelled
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

enum { LU_MARK_NEW, LU_MARK_ON_STACK, LU_MARK_DONE };
/* lu_file.mark: the walk's generation above, the mark in the low bits. */
#define LU_MARK_BITS	2
#define LU_MARK_MASK	((1U << LU_MARK_BITS) - 1)

struct lu_walk_frame {
	struct lu_file *lf;
	unsigned int next_dep;
};

/**
 * struct lu_walk - one or more dependency walks over a session's files
 * @session: the session
 * @frames:  the files being walked, innermost last
 * @depth:   frames in use
 * @cap:     frames allocated (grown as the walk deepens)
 * @gen:     this walk's generation: marks of older walks read as new,
 *           so no walk costs more than the files it visits
 */
struct lu_walk {
	struct lu_session *session;
	struct lu_walk_frame *frames;
	unsigned int depth;
	unsigned int cap;
	unsigned int gen;
};

static void lu_walk_start(struct lu_walk *w, struct lu_session *session)
{
	struct lu_file *lf;

	*w = (struct lu_walk){ .session = session };
	w->gen = ++session->walk_gen & (UINT_MAX >> LU_MARK_BITS);
	if (w->gen)
		return;
	/* The generation wrapped (after 2^30 walks): forget every mark. */
	list_for_each_entry(lf, &session->files, node)
		lf->mark = 0;
	w->gen = session->walk_gen = 1;
}

static void lu_walk_end(struct lu_walk *w)
{
	kvfree(w->frames);
}

static unsigned int lu_walk_mark(const struct lu_walk *w,
				 const struct lu_file *lf)
{
	/* A retrieved file's dependencies were all retrieved before it. */
	if (lf->state == LU_FILE_RETRIEVED && lf->indexed)
		return LU_MARK_DONE;
	return lf->mark >> LU_MARK_BITS == w->gen ? lf->mark & LU_MARK_MASK :
						    LU_MARK_NEW;
}

static void lu_walk_set_mark(const struct lu_walk *w, struct lu_file *lf,
			     unsigned int mark)
{
	lf->mark = w->gen << LU_MARK_BITS | mark;
}

static int lu_walk_push(struct lu_walk *w, struct lu_file *lf)
{
	if (w->depth == w->cap) {
		unsigned int cap = max(16U, 2 * w->cap);
		struct lu_walk_frame *frames;

		frames = kvrealloc(w->frames, array_size(cap, sizeof(*frames)),
				   GFP_KERNEL);
		if (!frames)
			return -ENOMEM;
		w->frames = frames;
		w->cap = cap;
	}
	w->frames[w->depth++] = (struct lu_walk_frame){ .lf = lf };
	lu_walk_set_mark(w, lf, LU_MARK_ON_STACK);
	return 0;
}

/*
 * Visits @root's dependencies, transitively, then @root: each file after
 * the files it needs, each once. Iterative, with a stack that grows with
 * the depth reached: a chain of any length fits in kernel stack. Files
 * done by an earlier walk of @w (or retrieved already) are skipped, so
 * walks started from every file of a session visit each file once in
 * all, and a walk costs only the files it visits.
 *
 * Return: 0, what @visit returned, -ENOMEM, -ENOENT (*@bad: the missing
 * token) or -ELOOP (*@bad: a token in the cycle).
 */
static int lu_file_walk(struct lu_walk *w, struct lu_file *root,
			int (*visit)(struct lu_file *lf, void *ctx), void *ctx,
			u64 *bad)
{
	int err;

	if (lu_walk_mark(w, root) == LU_MARK_DONE)
		return 0;
	w->depth = 0;
	err = lu_walk_push(w, root);
	while (!err && w->depth) {
		struct lu_walk_frame *top = &w->frames[w->depth - 1];
		struct lu_file *dep;

		if (top->next_dep == top->lf->nr_deps) {
			err = visit(top->lf, ctx);
			if (err) {
				*bad = top->lf->token;
				break;
			}
			lu_walk_set_mark(w, top->lf, LU_MARK_DONE);
			w->depth--;
			continue;
		}
		dep = lu_file_find(w->session, top->lf->deps[top->next_dep]);
		if (!dep) {
			*bad = top->lf->deps[top->next_dep];
			return -ENOENT;
		}
		top->next_dep++;
		switch (lu_walk_mark(w, dep)) {
		case LU_MARK_DONE:
			continue;
		case LU_MARK_ON_STACK:
			*bad = dep->token;
			return -ELOOP;
		}
		err = lu_walk_push(w, dep);
		cond_resched();
	}
	return err;
}

static int lu_file_order_visit(struct lu_file *lf, void *sorted)
{
	list_move_tail(&lf->node, sorted);
	return 0;
}

/**
 * lu_file_order - check a session's dependencies and sort its files
 * @session:   an outgoing session
 * @bad_token: on failure, the missing token or one in a cycle
 *
 * Moves every file after the files it depends on, keeping the order of
 * preservation otherwise: a depth-first walk in that order, O(files +
 * dependencies).
 *
 * Return: 0, -ENOMEM, -ENOENT for a token that no file of the session
 * has, or -ELOOP for a cycle. On failure the files stay in the session
 * in an order that the next call sorts again.
 */
int lu_file_order(struct lu_session *session, u64 *bad_token)
{
	struct lu_walk walk;
	struct lu_file *lf;
	LIST_HEAD(sorted);
	int err = 0;

	lockdep_assert_held(&lu.lock);
	lu_walk_start(&walk, session);
	/* Each walk moves its first file, and what it needs, to @sorted. */
	while (!list_empty(&session->files)) {
		lf = list_first_entry(&session->files, struct lu_file, node);
		err = lu_file_walk(&walk, lf, lu_file_order_visit, &sorted,
				   bad_token);
		if (err)
			break;
		cond_resched();
	}
	list_splice(&sorted, &session->files);
	lu_walk_end(&walk);
	return err;
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
 *
 * Return: 0 or the failing file's error.
 */
int lu_file_prepare_all(struct lu_session *session, u64 *failed_token)
{
	struct lu_file *lf;
	int err;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry(lf, &session->files, node) {
		if (lf->state != LU_FILE_PRESERVED)
			continue;
		err = lu_file_prepare(lf);
		if (err) {
			*failed_token = lf->token;
			list_for_each_entry_continue_reverse(lf, &session->files,
							     node)
				lu_file_cancel(lf);
			return err;
		}
		cond_resched();
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
 *
 * Return: 0 or the failing file's error.
 */
int lu_file_freeze_all(struct lu_session *session, u64 *failed_token)
{
	struct lu_file *lf;
	int err;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry(lf, &session->files, node) {
		if (lf->state == LU_FILE_FROZEN)
			continue;
		err = lu_file_freeze(lf);
		if (err) {
			*failed_token = lf->token;
			list_for_each_entry_continue_reverse(lf, &session->files,
							     node)
				lu_file_unfreeze(lf);
			return err;
		}
		cond_resched();
	}
	return 0;
}

/**
 * lu_file_refreeze_all - carry what changed since FREEZE (reboot notifier)
 * @session: an outgoing session; only its frozen files are frozen again
 *
 * Writes into holes, positions and seals changed after FREEZE. A file
 * whose second freeze fails keeps what FREEZE published, and the log
 * says which changes are lost.
 */
void lu_file_refreeze_all(struct lu_session *session)
{
	struct lu_file *lf;
	int err;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry(lf, &session->files, node) {
		if (lf->state != LU_FILE_FROZEN)
			continue;
		err = lu_file_freeze(lf);
		if (err)
			pr_err("liveupdate: kexec: session %s, token %llu: changes since FREEZE are NOT carried: %d\n",
			       session->name, lf->token, err);
	}
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

/* Retrieves one incoming file whose dependencies are retrieved. */
static int lu_file_retrieve_visit(struct lu_file *lf, void *unused)
{
	int err;

	switch (lf->state) {
	case LU_FILE_RETRIEVED:
		break;
	case LU_FILE_FAILED:
		return lf->err;
	case LU_FILE_PENDING:
	case LU_FILE_RESTORING:
		if (!lf->handler)
			lf->handler = lu_handler_get(lf->compatible);
		if (!lf->handler) {
			lu_err("token %llu: no handler \"%s\" registered\n",
			       lf->token, lf->compatible);
			return -ENOPKG;
		}
		lu_debug_slow_retrieve(lf->token);
		err = lf->handler->retrieve(lf);
		if (err == -EIO) {
			lf->state = LU_FILE_FAILED;
			lf->err = err;
		} else if (err) {
			lf->state = LU_FILE_RESTORING;
		}
		if (err)
			return err;
		lf->state = LU_FILE_RETRIEVED;
		break;
	default:
		WARN_ON_ONCE(1);
		return -EINVAL;
	}
	/* Until FINISH, the file may not be preserved again. */
	if (!lf->indexed) {
		err = xa_insert(&lu.busy_files,
				lu_busy_key(lf->handler, lf->file), lf,
				GFP_KERNEL);
		if (err)
			return err;
		lf->indexed = true;
	}
	return 0;
}

/**
 * lu_file_retrieve - get the file preserved under @token
 * @session: an incoming session
 * @token:   the token
 * @filep:   a new reference to the file
 *
 * The first call builds the file, and the files it depends on; later
 * calls return the same file. A failure on damaged data is final: every
 * later call fails the same way. Any other failure hands out nothing and
 * the next call resumes.
 *
 * Return: 0, -ENOENT for an unknown token, or the error of the file
 * or of one of its dependencies.
 */
int lu_file_retrieve(struct lu_session *session, u64 token,
		     struct file **filep)
{
	struct lu_walk walk;
	struct lu_file *lf;
	u64 bad;
	int err;

	lockdep_assert_held(&session->lock);
	lf = lu_file_find(session, token);
	if (!lf)
		return -ENOENT;
	if (lf->state == LU_FILE_FAILED)
		return lf->err;
	lu_walk_start(&walk, session);
	err = lu_file_walk(&walk, lf, lu_file_retrieve_visit, NULL, &bad);
	lu_walk_end(&walk);
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

	lockdep_assert(lockdep_is_held(&lu.lock) ||
		       lockdep_is_held(&lf->session->lock));
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
 * @bytes:      increased by the memory the files never retrieved return
 *
 * Retrieved files become ordinary files; the others are freed, dependent
 * files before their dependencies. A file whose handler never registered
 * cannot be freed: its memory stays reserved until the next boot. A
 * handler that fails (-ENOMEM) stops the walk: the files finished so far
 * are gone, the rest stay for the next call.
 *
 * Return: 0 or the handler's error.
 */
int lu_file_finish_all(struct lu_session *session, unsigned int *nr_dropped,
		       u64 *bytes)
{
	struct lu_file *lf, *next;
	int err;

	lockdep_assert_held(&lu.lock);
	lockdep_assert_held(&session->lock);
	list_for_each_entry_safe_reverse(lf, next, &session->files, node) {
		if (!lf->handler)
			lf->handler = lu_handler_get(lf->compatible);
		if (lf->state == LU_FILE_RETRIEVED) {
			if (lf->indexed)
				xa_erase(&lu.busy_files,
					 lu_busy_key(lf->handler, lf->file));
			err = lf->handler->finish(lf, bytes);
			if (WARN_ON_ONCE(err))
				err = 0;
			fput(lf->file);
		} else if (lf->handler) {
			err = lf->handler->finish(lf, bytes);
			if (err)
				return err;
			(*nr_dropped)++;
		} else {
			pr_warn("liveupdate: session %s, token %llu: no handler \"%s\", its memory stays reserved\n",
				session->name, lf->token, lf->compatible);
			(*nr_dropped)++;
		}
		lu.nr_in_files--;
		lu_file_free(lf);
		cond_resched();
	}
	return 0;
}

/**
 * lu_file_forget_all - free an incoming session's files, not their data
 * @session: a session built by a module load that failed
 */
void lu_file_forget_all(struct lu_session *session)
{
	struct lu_file *lf, *next;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry_safe(lf, next, &session->files, node) {
		lu.nr_in_files--;
		lu_file_free(lf);
	}
}

/**
 * lu_file_add_incoming - add a file read from the hand-over data
 * @session:    its incoming session
 * @token:      its token
 * @compatible: its handler's name, NUL-terminated
 * @data:       the handler's data, in the checked copy of the table
 * @size:       its bytes
 * @deps:       its dependencies' tokens
 * @nr_deps:    entries in @deps
 *
 * The handler is looked up now and again at retrieval: it may be
 * registered later. The previous kernel wrote a session's files after
 * their dependencies; the token index checks that, and that tokens are
 * unique, as the files are added.
 *
 * Return: 0, -ENOMEM, or -EBADMSG for a duplicate token, a dependency
 * that does not come before the file, or one named twice.
 */
int lu_file_add_incoming(struct lu_session *session, u64 token,
			 const char *compatible, const void *data, u32 size,
			 const u64 *deps, unsigned int nr_deps)
{
	struct lu_file *lf;
	unsigned int i;
	int err;

	lockdep_assert_held(&lu.lock);
	if (lu_file_check_deps(token, deps, nr_deps))
		return -EBADMSG;
	for (i = 0; i < nr_deps; i++)
		if (!lu_file_find(session, deps[i]))
			return -EBADMSG;
	lf = lu_file_new(session, token, compatible, deps, nr_deps);
	if (!lf)
		return -ENOMEM;
	lf->state = LU_FILE_PENDING;
	err = lu_data_copy(&lf->data, data, size);
	if (err) {
		lu_file_destroy(lf);
		return err;
	}
	lf->handler = lu_handler_get(compatible);
	err = xa_insert(&session->tokens, token, lf, GFP_KERNEL);
	if (err) {
		lu_file_destroy(lf);
		return err == -EBUSY ? -EBADMSG : err;
	}
	lu_file_publish(lf);
	lu.nr_in_files++;
	return 0;
}
