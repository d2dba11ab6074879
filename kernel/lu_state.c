// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate's state machine
 *
 *   NORMAL --prepare--> PREPARED --freeze--> FROZEN --kexec--> (next kernel)
 *     ^                    |                    |
 *     +------cancel--------+--------cancel------+
 *   (next kernel, sessions taken over) UPDATED --finish--> NORMAL
 *
 * Mainline's LUO serializes inside reboot(), where it can still fail the
 * kexec. A module cannot: its reboot notifier runs too late to refuse.
 * So userspace drives the work through events and sees every error:
 * PREPARE serializes every preserved file into KHO while workloads run,
 * FREEZE records the little that can still change, CANCEL undoes both.
 * A failing event undoes its own work and leaves the state as it was.
 * Between PREPARE and CANCEL or kexec the module holds a reference to
 * itself and keeps outgoing sessions even when their fds are closed.
 *
 * A kexec without PREPARE and FREEZE (a program written for mainline)
 * still carries the sessions: the reboot notifier prepares and freezes
 * them itself. A session that fails there cannot fail the kexec any
 * more; it is dropped from the hand-over, and the log says so loudly.
 *
 * In the next kernel the state is UPDATED while taken-over sessions are
 * not finished. FINISH releases what nobody retrieved; finishing or
 * closing the last retrieved session also returns to NORMAL.
 *
 * Events run under lu.lock, so concurrent events are serialized and each
 * sees the state the previous one left. Every transition sends a
 * KOBJ_CHANGE uevent with LIVEUPDATE_STATE= and LIVEUPDATE_EVENT=.
 */
#include <linux/cleanup.h>
#include <linux/device.h>
#include <linux/kexec_handover.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#include "lu_internal.h"

static const char *const lu_state_names[] = {
	[LIVEUPDATE_STATE_NORMAL] = "normal",
	[LIVEUPDATE_STATE_PREPARED] = "prepared",
	[LIVEUPDATE_STATE_FROZEN] = "frozen",
	[LIVEUPDATE_STATE_UPDATED] = "updated",
};

static const char *const lu_event_names[] = {
	[LIVEUPDATE_EVENT_PREPARE] = "prepare",
	[LIVEUPDATE_EVENT_FREEZE] = "freeze",
	[LIVEUPDATE_EVENT_CANCEL] = "cancel",
	[LIVEUPDATE_EVENT_FINISH] = "finish",
};

static void lu_state_set(unsigned int state, unsigned int event)
{
	char state_env[32], event_env[32];
	char *envp[3];

	lockdep_assert_held(&lu.lock);
	envp[0] = state_env;
	envp[1] = event_env;
	envp[2] = NULL;
	WRITE_ONCE(lu.state, state);
	if (!lu.dev)
		return;
	snprintf(state_env, sizeof(state_env), "LIVEUPDATE_STATE=%s",
		 lu_state_names[state]);
	snprintf(event_env, sizeof(event_env), "LIVEUPDATE_EVENT=%s",
		 lu_event_names[event]);
	kobject_uevent_env(&lu.dev->kobj, KOBJ_CHANGE, envp);
}

/**
 * lu_state_holds_sessions - whether closing a session fd keeps the session
 *
 * Return: true between PREPARE and CANCEL or the kexec.
 */
bool lu_state_holds_sessions(void)
{
	lockdep_assert_held(&lu.lock);
	return lu.state == LIVEUPDATE_STATE_PREPARED ||
	       lu.state == LIVEUPDATE_STATE_FROZEN;
}

/**
 * lu_state_session_finished - an incoming session was finished or closed
 *
 * The last one ends the UPDATED state as a FINISH event would.
 */
void lu_state_session_finished(void)
{
	lockdep_assert_held(&lu.lock);
	if (lu.state == LIVEUPDATE_STATE_UPDATED && !lu.nr_in_sessions) {
		lu_subsystems_finish();
		lu_state_set(LIVEUPDATE_STATE_NORMAL, LIVEUPDATE_EVENT_FINISH);
	}
}

static int lu_event_failed(struct liveupdate_set_event *arg, const char *name,
			   u64 token, int err)
{
	arg->err_token = token;
	strscpy(arg->err_session, name, sizeof(arg->err_session));
	lu_err("%s failed: %s, token %llu: %d\n", lu_event_names[arg->event],
	       name, token, err);
	return err;
}

/*
 * One step of PREPARE or FREEZE: @files_step on every session (after
 * sorting its files by dependency), then @ss_step on the subsystems. On
 * failure @files_undo runs on the sessions done and the reply names the
 * culprit.
 */
static int lu_event_step(struct liveupdate_set_event *arg,
			 int (*files_step)(struct lu_session *, u64 *),
			 void (*files_undo)(struct lu_session *),
			 int (*ss_step)(const char **))
{
	struct lu_session *session;
	const char *name;
	u64 token = 0;
	int err;

	list_for_each_entry(session, &lu.outgoing, node) {
		err = lu_file_order(session, &token);
		if (!err)
			err = files_step(session, &token);
		if (err) {
			lu_event_failed(arg, session->name, token, err);
			list_for_each_entry_continue_reverse(session, &lu.outgoing,
							     node)
				files_undo(session);
			return err;
		}
	}
	err = ss_step(&name);
	if (err) {
		lu_event_failed(arg, name, 0, err);
		list_for_each_entry_reverse(session, &lu.outgoing, node)
			files_undo(session);
	}
	return err;
}

/*
 * liveupdatefs instances: their files are the tree's files of the moment,
 * preserved at PREPARE and let go again at CANCEL (the instance keeps them).
 */
static int lu_collect_instances(struct liveupdate_set_event *arg)
{
	struct lu_session *session;
	int err;

	list_for_each_entry(session, &lu.outgoing, node) {
		if (!session->fs)
			continue;
		err = lufs_collect(session);
		if (err)
			return lu_event_failed(arg, session->name, 0, err);
	}
	return 0;
}

static void lu_release_instances(void)
{
	struct lu_session *session;

	list_for_each_entry(session, &lu.outgoing, node)
		if (session->fs)
			lu_file_unpreserve_all(session);
}

static int lu_event_prepare(struct liveupdate_set_event *arg)
{
	ktime_t start = ktime_get();
	int err;

	if (lu.state != LIVEUPDATE_STATE_NORMAL)
		return -EBUSY;
	err = lu_collect_instances(arg);
	if (!err)
		err = lu_event_step(arg, lu_file_prepare_all,
				    lu_file_cancel_all, lu_subsystems_prepare);
	if (err) {
		lu_release_instances();
		return err;
	}
	__module_get(THIS_MODULE);
	lu_state_set(LIVEUPDATE_STATE_PREPARED, LIVEUPDATE_EVENT_PREPARE);
	lu_info("prepared %u sessions, %u files, %llu bytes in %lld ms\n",
		lu.nr_out_sessions, lu.nr_out_files, lu.nr_out_bytes,
		ktime_ms_delta(ktime_get(), start));
	return 0;
}

static int lu_event_freeze(struct liveupdate_set_event *arg)
{
	ktime_t start = ktime_get();
	int err;

	if (lu.state != LIVEUPDATE_STATE_PREPARED)
		return -EBUSY;
	err = lu_event_step(arg, lu_file_freeze_all, lu_file_unfreeze_all,
			    lu_subsystems_freeze);
	if (err)
		return err;
	lu_kho_write_table();
	lu_state_set(LIVEUPDATE_STATE_FROZEN, LIVEUPDATE_EVENT_FREEZE);
	lu_info("froze %u sessions in %lld us\n", lu.nr_out_sessions,
		ktime_us_delta(ktime_get(), start));
	return 0;
}

static int lu_event_cancel(struct liveupdate_set_event *arg)
{
	struct lu_session *session, *next;

	if (!lu_state_holds_sessions())
		return -EBUSY;
	lu_kho_unpublish();
	lu_subsystems_cancel();
	list_for_each_entry_safe_reverse(session, next, &lu.outgoing, node) {
		lu_file_cancel_all(session);
		if (session->fs)
			lu_file_unpreserve_all(session);
		if (session->state == LU_SESSION_HELD)
			lu_session_free(session);
	}
	lu_state_set(LIVEUPDATE_STATE_NORMAL, LIVEUPDATE_EVENT_CANCEL);
	lu_info("cancelled: %u sessions stay preserved\n", lu.nr_out_sessions);
	module_put(THIS_MODULE);
	return 0;
}

static int lu_event_finish(struct liveupdate_set_event *arg)
{
	struct lu_session *session, *next;
	int err;

	if (lu.state != LIVEUPDATE_STATE_UPDATED)
		return -EBUSY;
	list_for_each_entry_safe(session, next, &lu.incoming, node) {
		/* Retrieved sessions stay until their fd is closed. */
		if (session->state == LU_SESSION_RETRIEVED ||
		    session->state == LU_SESSION_FINISHED) {
			err = lu_session_finish(session, &arg->nr_files,
						&arg->nr_bytes);
		} else {
			err = lu_session_drop_incoming(session, &arg->nr_files,
						       &arg->nr_bytes);
			arg->nr_sessions += !err;
		}
		/* What is finished stays finished; a retry does the rest. */
		if (err)
			return lu_event_failed(arg, session->name, 0, err);
	}
	lu_subsystems_finish();
	lu_state_set(LIVEUPDATE_STATE_NORMAL, LIVEUPDATE_EVENT_FINISH);
	lu_info("finished: released %u sessions and %u files never retrieved, %llu bytes\n",
		arg->nr_sessions, arg->nr_files, arg->nr_bytes);
	return 0;
}

static int (*const lu_events[])(struct liveupdate_set_event *arg) = {
	[LIVEUPDATE_EVENT_PREPARE] = lu_event_prepare,
	[LIVEUPDATE_EVENT_FREEZE] = lu_event_freeze,
	[LIVEUPDATE_EVENT_CANCEL] = lu_event_cancel,
	[LIVEUPDATE_EVENT_FINISH] = lu_event_finish,
};

/**
 * lu_state_run_event - run an event, as SET_EVENT and liveupdatefs do
 * @arg: the event in @arg->event; the results are written into it
 * @ran: set to whether the event ran (then @arg says how it went)
 *
 * Return: 0 or the event's error; -EOPNOTSUPP for an unknown event,
 * -EINTR if killed while waiting, -EBUSY after the reboot notifier.
 */
int lu_state_run_event(struct liveupdate_set_event *arg, bool *ran)
{
	*ran = false;
	if (arg->event >= ARRAY_SIZE(lu_events) || !lu_events[arg->event])
		return -EOPNOTSUPP;
	arg->nr_sessions = 0;
	arg->nr_files = 0;
	arg->nr_bytes = 0;
	arg->err_token = 0;
	memset(arg->err_session, 0, sizeof(arg->err_session));
	scoped_cond_guard(mutex_kill, return -EINTR, &lu.lock) {
		if (lu.rebooting)
			return -EBUSY;
		*ran = true;
		return lu_events[arg->event](arg);
	}
	return 0;
}

/**
 * lu_state_event_named - an event by its name ("prepare", ...)
 * @name: the name
 *
 * Return: the event, or -EINVAL.
 */
int lu_state_event_named(const char *name)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(lu_event_names); i++)
		if (lu_event_names[i] && !strcmp(lu_event_names[i], name))
			return i;
	return -EINVAL;
}

/* The state's name, without the lock: "normal", "prepared", ... */
const char *lu_state_name(void)
{
	return lu_state_names[READ_ONCE(lu.state)];
}

/* The struct goes back to the caller on failure too: it names the file. */
int lu_ioctl_set_event(void *ctx, struct lu_ucmd *ucmd)
{
	struct liveupdate_set_event *arg = ucmd->cmd;
	int err, rerr;
	bool ran;

	err = lu_state_run_event(arg, &ran);
	if (!ran)
		return err;
	rerr = lu_ucmd_respond(ucmd, sizeof(*arg));
	return err ?: rerr;
}

/* A snapshot without the lock, so that it answers during a long PREPARE. */
int lu_ioctl_get_state(void *ctx, struct lu_ucmd *ucmd)
{
	struct liveupdate_get_state *arg = ucmd->cmd;

	arg->state = READ_ONCE(lu.state);
	arg->flags = is_kho_boot() ? LIVEUPDATE_STATE_KHO_BOOT : 0;
	arg->format_version = LU_KHO_VERSION;
	arg->nr_sessions = READ_ONCE(lu.nr_out_sessions);
	arg->nr_files = READ_ONCE(lu.nr_out_files);
	arg->nr_incoming_sessions = READ_ONCE(lu.nr_in_sessions);
	arg->nr_incoming_files = READ_ONCE(lu.nr_in_files);
	arg->nr_bytes = READ_ONCE(lu.nr_out_bytes);
	return lu_ucmd_respond(ucmd, sizeof(*arg));
}

/**
 * lu_state_kexec - the kexec reboot notifier's part
 *
 * Prepares and freezes what userspace did not, session by session, and
 * freezes frozen files once more so that writes into holes, positions
 * and seals changed since FREEZE are carried too. A session that fails
 * is dropped from the hand-over (the kexec cannot be refused any more);
 * a file whose second freeze fails keeps what FREEZE published. Then the
 * table is written for the next kernel.
 */
void lu_state_kexec(void)
{
	struct lu_session *session;
	const char *name;
	u64 token = 0;
	int err;

	guard(mutex)(&lu.lock);
	list_for_each_entry(session, &lu.outgoing, node) {
		/* Frozen files first: carry what changed since FREEZE. */
		lu_file_refreeze_all(session);
		err = session->fs ? lufs_collect(session) : 0;
		if (!err)
			err = lu_file_order(session, &token);
		if (!err)
			err = lu_file_prepare_all(session, &token);
		if (!err)
			err = lu_file_freeze_all(session, &token);
		if (err) {
			pr_err("liveupdate: kexec: session %s is NOT carried over: token %llu failed: %d\n",
			       session->name, token, err);
			lu_file_cancel_all(session);
			lu_session_set_state(session, LU_SESSION_DROPPED);
		}
	}
	/* Prepared and frozen subsystems are skipped: each step runs once. */
	err = lu_subsystems_prepare(&name);
	if (!err)
		err = lu_subsystems_freeze(&name);
	if (err) {
		pr_err("liveupdate: kexec: subsystems are NOT carried over: %s failed: %d\n",
		       name, err);
		lu_subsystems_cancel();
	}
	/* From here on nothing changes: the table is final. */
	lu.rebooting = true;
	lu_kho_write_table();
}

static ssize_t state_show(struct device *dev, struct device_attribute *attr,
			  char *buf)
{
	return sysfs_emit(buf, "%s\n", lu_state_names[READ_ONCE(lu.state)]);
}
static DEVICE_ATTR_RO(state);

static struct attribute *lu_state_attrs[] = {
	&dev_attr_state.attr,
	NULL,
};

static const struct attribute_group lu_state_group = {
	.attrs = lu_state_attrs,
};

const struct attribute_group *lu_state_groups[] = {
	&lu_state_group,
	NULL,
};
