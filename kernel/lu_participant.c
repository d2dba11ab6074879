// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate participants: file handlers and subsystems
 *
 * The registries behind the exported API of <liveupdate/participant.h>,
 * and the subsystems' part of each event. Files come first at PREPARE and
 * FREEZE, subsystems after them in the order they registered; CANCEL runs
 * in reverse. A subsystem's owner module is pinned from PREPARE until
 * CANCEL (or the kexec), so it cannot go away with its data in KHO.
 *
 * The handler registry has its own lock, lu_handlers_lock, so that a
 * retrieve, which holds only its session's lock, can look a handler up;
 * the subsystem registry is under lu.lock.
 */
#include <linux/cleanup.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "lu_internal.h"

static DEFINE_MUTEX(lu_handlers_lock);

static struct lu_file_handler *lu_handler_find(const char *compatible)
{
	struct lu_file_handler *handler;

	list_for_each_entry(handler, &lu.handlers, list)
		if (!strcmp(handler->compatible, compatible))
			return handler;
	return NULL;
}

static struct lu_file_handler *lu_handler_tryget(struct lu_file_handler *h)
{
	return h && try_module_get(h->owner) ? h : NULL;
}

/**
 * lu_handler_for_file - the handler that can carry @file, with a reference
 * @file: the file
 *
 * Return: the handler, or NULL if none carries @file.
 */
struct lu_file_handler *lu_handler_for_file(struct file *file)
{
	struct lu_file_handler *handler;

	guard(mutex)(&lu_handlers_lock);
	list_for_each_entry(handler, &lu.handlers, list)
		if (handler->can_preserve(file))
			return lu_handler_tryget(handler);
	return NULL;
}

/**
 * lu_handler_get - the handler named @compatible, with a reference
 * @compatible: the handler's name
 *
 * Return: the handler, or NULL if none is registered under that name.
 */
struct lu_file_handler *lu_handler_get(const char *compatible)
{
	guard(mutex)(&lu_handlers_lock);
	return lu_handler_tryget(lu_handler_find(compatible));
}

/**
 * lu_handler_put - drop a reference from lu_handler_get()
 * @handler: the handler
 */
void lu_handler_put(const struct lu_file_handler *handler)
{
	module_put(handler->owner);
}

static bool lu_participant_name_valid(const char *name)
{
	size_t len = name ? strnlen(name, LU_COMPATIBLE_LENGTH) : 0;

	return len && len < LU_COMPATIBLE_LENGTH;
}

/**
 * lu_register_file_handler - let liveupdate carry a new kind of file
 * @handler: the handler; it must stay valid until unregistered
 *
 * Return: 0, -EINVAL for a bad name or a missing mandatory callback, or
 * -EEXIST if a handler of this name is registered.
 */
int lu_register_file_handler(struct lu_file_handler *handler)
{
	if (!lu_participant_name_valid(handler->compatible) ||
	    !handler->can_preserve || !handler->preserve ||
	    !handler->unpreserve || !handler->prepare || !handler->cancel ||
	    !handler->retrieve || !handler->finish)
		return -EINVAL;
	guard(mutex)(&lu_handlers_lock);
	if (lu_handler_find(handler->compatible))
		return -EEXIST;
	list_add_tail(&handler->list, &lu.handlers);
	return 0;
}
EXPORT_SYMBOL_GPL(lu_register_file_handler);

/**
 * lu_unregister_file_handler - undo lu_register_file_handler()
 * @handler: the handler
 *
 * Files carried by the handler hold a reference on its module, so this
 * runs when no file needs it any more.
 */
void lu_unregister_file_handler(struct lu_file_handler *handler)
{
	guard(mutex)(&lu_handlers_lock);
	list_del(&handler->list);
}
EXPORT_SYMBOL_GPL(lu_unregister_file_handler);

static struct lu_subsystem *lu_subsystem_find(const char *name)
{
	struct lu_subsystem *ss;

	list_for_each_entry(ss, &lu.subsystems, list)
		if (!strcmp(ss->name, name))
			return ss;
	return NULL;
}

static struct lu_in_subsystem *lu_in_subsystem_find(const char *name)
{
	unsigned int i;

	for (i = 0; i < lu.nr_in_subsystems; i++)
		if (!strcmp(lu.in_subsystems[i].name, name))
			return &lu.in_subsystems[i];
	return NULL;
}

/**
 * lu_register_subsystem - take part in live updates with state of one's own
 * @ss: the subsystem; it must stay valid until unregistered
 *
 * Return: 0, -EINVAL for a bad name or a missing callback, -EEXIST for a
 * name in use, -EBUSY between PREPARE and CANCEL, -ENOSPC beyond
 * LU_MAX_SUBSYSTEMS, or -ENOMEM.
 */
int lu_register_subsystem(struct lu_subsystem *ss)
{
	int err;

	if (!lu_participant_name_valid(ss->name) || !ss->prepare ||
	    !ss->cancel || !ss->finish)
		return -EINVAL;
	guard(mutex)(&lu.lock);
	if (lu_state_holds_sessions() || lu.rebooting)
		return -EBUSY;
	if (lu_subsystem_find(ss->name))
		return -EEXIST;
	if (lu.nr_subsystems >= LU_MAX_SUBSYSTEMS)
		return -ENOSPC;
	err = lu_kho_reserve(0, 0, 0, 1, 0);
	if (err)
		return err;
	ss->prepared = false;
	ss->frozen = false;
	ss->data = (struct lu_data){};
	list_add_tail(&ss->list, &lu.subsystems);
	lu.nr_subsystems++;
	return 0;
}
EXPORT_SYMBOL_GPL(lu_register_subsystem);

/**
 * lu_unregister_subsystem - undo lu_register_subsystem()
 * @ss: the subsystem
 *
 * Its module is pinned between PREPARE and CANCEL, so nothing of it is
 * prepared here.
 */
void lu_unregister_subsystem(struct lu_subsystem *ss)
{
	guard(mutex)(&lu.lock);
	WARN_ON_ONCE(ss->prepared);
	list_del(&ss->list);
	lu.nr_subsystems--;
}
EXPORT_SYMBOL_GPL(lu_unregister_subsystem);

/**
 * lu_subsystem_data_alloc - the buffer for a subsystem's data
 * @ss:   the subsystem, in its prepare callback
 * @size: its bytes, 1 to LU_MAX_DATA
 *
 * As lu_file_data_alloc(): liveupdate carries the buffer and frees it
 * when the prepare fails or is cancelled; the freeze callback may change
 * it. The next kernel's subsystem of the same name finds the bytes with
 * lu_subsystem_incoming().
 *
 * Return: the zeroed buffer, or an ERR_PTR(): -EINVAL outside prepare or
 * for a bad size, -EBUSY for a second buffer, -ENOSPC, -ENOMEM.
 */
void *lu_subsystem_data_alloc(struct lu_subsystem *ss, size_t size)
{
	lockdep_assert_held(&lu.lock);
	if (ss->prepared)
		return ERR_PTR(-EINVAL);
	return lu_data_alloc(&ss->data, size);
}
EXPORT_SYMBOL_GPL(lu_subsystem_data_alloc);

/**
 * lu_subsystem_incoming - what the previous kernel's @ss handed over
 * @ss: a registered subsystem
 * @in: set to its data: liveupdate's checked copy, valid until @ss's
 *      finish callback has run for it
 *
 * Return: 0, or -ENOENT if nothing came under @ss's name (or it is
 * finished already).
 */
int lu_subsystem_incoming(struct lu_subsystem *ss, struct lu_data *in)
{
	struct lu_in_subsystem *found;

	guard(mutex)(&lu.lock);
	found = lu_in_subsystem_find(ss->name);
	if (!found || found->finished)
		return -ENOENT;
	*in = found->data;
	return 0;
}
EXPORT_SYMBOL_GPL(lu_subsystem_incoming);

static void lu_subsystem_cancel(struct lu_subsystem *ss)
{
	if (!ss->prepared)
		return;
	ss->cancel(ss);
	lu_data_free(&ss->data);
	ss->prepared = false;
	ss->frozen = false;
	module_put(ss->owner);
}

/**
 * lu_subsystems_prepare - PREPARE of every subsystem
 * @failed: set to the name of the subsystem that failed
 *
 * On failure the subsystems prepared by this call are cancelled again.
 *
 * Return: 0 or the failing subsystem's error.
 */
int lu_subsystems_prepare(const char **failed)
{
	struct lu_subsystem *ss;
	int err;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry(ss, &lu.subsystems, list) {
		if (ss->prepared)
			continue;
		err = try_module_get(ss->owner) ? 0 : -ENODEV;
		if (!err) {
			err = ss->prepare(ss);
			if (err) {
				lu_data_free(&ss->data);
				module_put(ss->owner);
			}
		}
		if (err) {
			*failed = ss->name;
			list_for_each_entry_continue_reverse(ss, &lu.subsystems,
							     list)
				lu_subsystem_cancel(ss);
			return err;
		}
		ss->prepared = true;
	}
	return 0;
}

/**
 * lu_subsystems_freeze - FREEZE of every subsystem
 * @failed: set to the name of the subsystem that failed
 *
 * Each subsystem freezes once between PREPARE and CANCEL: the reboot
 * notifier skips those FREEZE froze. Freeze callbacks have no undo: a
 * failure leaves the subsystems prepared.
 *
 * Return: 0 or the failing subsystem's error.
 */
int lu_subsystems_freeze(const char **failed)
{
	struct lu_subsystem *ss;
	int err;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry(ss, &lu.subsystems, list) {
		if (ss->frozen)
			continue;
		err = ss->freeze ? ss->freeze(ss) : 0;
		if (err) {
			*failed = ss->name;
			return err;
		}
		ss->frozen = true;
	}
	return 0;
}

/**
 * lu_subsystems_cancel - CANCEL of every subsystem, last registered first
 */
void lu_subsystems_cancel(void)
{
	struct lu_subsystem *ss;

	lockdep_assert_held(&lu.lock);
	list_for_each_entry_reverse(ss, &lu.subsystems, list)
		lu_subsystem_cancel(ss);
}

/**
 * lu_subsystems_finish - end of the hand-over for the subsystems
 *
 * Memory that the data of a subsystem which is not registered names
 * cannot be freed: it stays reserved until the next boot, and the log
 * says so. The data itself (liveupdate's copy) is freed.
 */
void lu_subsystems_finish(void)
{
	struct lu_in_subsystem *in;
	struct lu_subsystem *ss;
	unsigned int i;

	lockdep_assert_held(&lu.lock);
	for (i = 0; i < lu.nr_in_subsystems; i++) {
		in = &lu.in_subsystems[i];
		if (in->finished)
			continue;
		ss = lu_subsystem_find(in->name);
		if (ss)
			ss->finish(ss, &in->data);
		else
			pr_warn("liveupdate: subsystem %s is not registered; what its data names stays reserved\n",
				in->name);
		in->finished = true;
		kfree(in->data.ptr);
		in->data = (struct lu_data){};
	}
}

/**
 * lu_subsystems_release_incoming - forget the previous kernel's data
 */
void lu_subsystems_release_incoming(void)
{
	unsigned int i;

	lockdep_assert_held(&lu.lock);
	for (i = 0; i < lu.nr_in_subsystems; i++)
		kfree(lu.in_subsystems[i].data.ptr);
	kfree(lu.in_subsystems);
	lu.in_subsystems = NULL;
	lu.nr_in_subsystems = 0;
}
