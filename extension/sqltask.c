/*
 * sqltask.c: the pool of background workers that run SQL tasks ("kind": "sql").
 *
 * Each pool worker takes a tenant by weighted fair share (due.c) and runs one of its ready SQL
 * tasks in two transactions:
 * 1. the claim commits: the task shows "running", and its attempt is recorded durably before
 *    any of its SQL runs, so a task that kills its worker uses up its attempts and ends failed
 *    as abandoned instead of being retried for ever. The worker's slot (sqlslot.c) names the
 *    task from before the commit on, so the reaper knows it is alive;
 * 2. the task's SQL and its outcome (a completion or a failure, as from the API) commit together,
 *    or not at all: when the outcome is refused (the run was cancelled or timed out, the lease
 *    was taken over), the transaction rolls back with the task's effects. A task's work is
 *    applied at most once, and exactly once if it completes.
 *
 * The SQL runs in a subtransaction under SetUserIdAndSecContext with
 * SECURITY_RESTRICTED_OPERATION, so it has exactly the tenant's privileges and cannot SET ROLE
 * back to the worker's superuser. Its statement timeout is the least of its timeout_ms, what is
 * left of its run's timeout and cloacina.sql_task_timeout; while it runs, the worker polls its
 * slot, so a cancel of the run (or the run's timeout, which the scheduler enforces with a cancel)
 * stops it within a poll interval. A task that catches the cancel (query_canceled) and carries
 * on is stopped a second later by the worker ending itself: FATAL, which nothing catches.
 * Its input context is $1 (jsonb) and its run id $2 (bigint); if its last statement returns a
 * row whose first column is a JSON object, that is its output.
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "cloacina.h"

PGDLLEXPORT void cloacina_sql_worker_main(Datum main_arg);

/* how often a running task's worker looks for a cancel request */
#define CANCEL_POLL_MS 100
/*
 * How long a task's SQL may go on after its cancel or its timeout: a task can catch
 * query_canceled in plpgsql and carry on. Past this the worker ends itself (FATAL, which nothing
 * catches), the task's transaction rolls back, and the worker starts again in 5 s.
 */
#define STOP_GRACE_MS 1000
/* the claim's lease beyond the longest a task may run: the reaper's last resort */
#define LEASE_GRACE_S 60

typedef struct ClaimedSqlTask
{
	int64		task_id;
	int64		execution_id;
	int64		fence;
	char	   *sql;
	Datum		context;		/* jsonb, or 0 */
	char	   *role_name;		/* NULL: the tenant has none */
	int64		timeout_ms;		/* 0: none of its own */
	TimestampTz deadline;		/* the run's; DT_NOEND: none */
} ClaimedSqlTask;

/* Outcome of running a task's SQL: the output (jsonb) or an error message with its SQLSTATE. */
typedef struct SqlTaskOutcome
{
	bool		ok;
	Datum		output;
	char	   *error;
	bool		retryable;
} SqlTaskOutcome;

static int	my_worker = -1;
static TimeoutId cancel_poll = MAX_TIMEOUTS;

/* while a task's SQL runs: when its worker ends itself if it still runs (0: no cancel yet) */
static volatile TimestampTz stop_by_cancel = 0;
static volatile TimestampTz stop_by_timeout = 0;

/*
 * Timeout handler (signal context): turns a cancel request in our slot into a query cancel,
 * and ends the worker when the task's SQL outlives its cancel or its timeout by STOP_GRACE_MS.
 */
static void
poll_cancel_request(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (my_worker >= 0 && cloacina_sqlslot_cancel_requested(my_worker))
	{
		if (stop_by_cancel == 0)
			stop_by_cancel = TimestampTzPlusMilliseconds(now, STOP_GRACE_MS);
		QueryCancelPending = true;
		InterruptPending = true;
	}
	if ((stop_by_cancel != 0 && now >= stop_by_cancel) ||
		(stop_by_timeout != 0 && now >= stop_by_timeout))
	{
		ProcDiePending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);
}

/* Claims one ready SQL task of "schema" into "task" (allocated in "keep"); false if none. */
static bool
claim_one(const char *schema, const char *worker_name, ClaimedSqlTask *task, MemoryContext keep)
{
	TenantPath	path = cloacina_enter_tenant(schema);
	Datum		lease = DirectFunctionCall7(make_interval, Int32GetDatum(0), Int32GetDatum(0),
											Int32GetDatum(0), Int32GetDatum(0), Int32GetDatum(0),
											Int32GetDatum(0),
											Float8GetDatum(cloacina_sql_task_timeout_ms / 1000.0 + LEASE_GRACE_S));
	SPITupleTable *claimed;
	uint64		n_claimed;
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	MemoryContext old;

	claimed = cloacina_claim_tasks(path.schema, CLAIM_SQL_TASK, CStringGetTextDatum(worker_name),
								   (Datum) 0, 1, lease, GetCurrentTransactionStartTimestamp(),
								   &n_claimed);
	cloacina_leave_tenant_path(&path);
	if (n_claimed == 0)
		return false;

	/* the columns of the claim (claim.c) */
	row = claimed->vals[0];
	desc = claimed->tupdesc;
	old = MemoryContextSwitchTo(keep);
	task->task_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	task->execution_id = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
	task->fence = DatumGetInt64(SPI_getbinval(row, desc, 6, &isnull));
	d = SPI_getbinval(row, desc, 7, &isnull);
	task->context = isnull ? (Datum) 0 : datumCopy(d, false, -1);
	task->sql = SPI_getvalue(row, desc, CLAIM_DEADLINE_COLUMN + 1);
	task->role_name = SPI_getvalue(row, desc, CLAIM_DEADLINE_COLUMN + 2);
	d = SPI_getbinval(row, desc, CLAIM_DEADLINE_COLUMN + 3, &isnull);
	task->timeout_ms = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(row, desc, CLAIM_DEADLINE_COLUMN + 4, &isnull);
	task->deadline = isnull ? DT_NOEND : DatumGetTimestampTz(d);
	MemoryContextSwitchTo(old);
	return true;
}

/* The statement timeout of the task's SQL: its own, its run's and the operator's, the least. */
static int
statement_timeout_ms(ClaimedSqlTask *task)
{
	int64		ms = cloacina_sql_task_timeout_ms;

	if (task->timeout_ms > 0)
		ms = Min(ms, task->timeout_ms);
	if (task->deadline != DT_NOEND)
		ms = Min(ms, Max((task->deadline - GetCurrentTimestamp()) / 1000, 1));
	return (int) Min(ms, INT_MAX);
}

static void
stop_task_timers(void)
{
	disable_timeout(STATEMENT_TIMEOUT, false);
	disable_timeout(cancel_poll, false);
	stop_by_cancel = 0;
	stop_by_timeout = 0;
}

/* Runs the task's SQL as the tenant role, inside a subtransaction that an error rolls back. */
static SqlTaskOutcome
run_as_tenant(const char *schema, ClaimedSqlTask *task)
{
	SqlTaskOutcome outcome = {false, (Datum) 0, NULL, true};
	MemoryContext caller_context = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	Oid			saved_user;
	int			saved_sec_context;
	Oid			tenant_role;

	if (task->role_name == NULL)
	{
		outcome.error = pstrdup("the tenant has no role to run SQL tasks as");
		outcome.retryable = false;
		return outcome;
	}
	tenant_role = get_role_oid(task->role_name, false);
	GetUserIdAndSecContext(&saved_user, &saved_sec_context);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller_context);
	PG_TRY();
	{
		Oid			argtypes[2] = {JSONBOID, INT8OID};
		Datum		args[2];
		char		nulls[2] = {' ', ' '};
		int			nest = NewGUCNestLevel();
		int			timeout_ms;

		SetUserIdAndSecContext(tenant_role, saved_sec_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		(void) set_config_option("search_path", quote_identifier(schema), PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

		/*
		 * the task may wait for its own locks as long as its statement
		 * timeout allows
		 */
		(void) set_config_option("lock_timeout", "0", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);

		/*
		 * statement_timeout is armed by the client protocol loop, which a
		 * worker has not
		 */
		timeout_ms = statement_timeout_ms(task);
		stop_by_cancel = 0;
		stop_by_timeout = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms + STOP_GRACE_MS);
		enable_timeout_after(STATEMENT_TIMEOUT, timeout_ms);
		enable_timeout_every(cancel_poll,
							 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CANCEL_POLL_MS),
							 CANCEL_POLL_MS);

		args[0] = task->context;
		nulls[0] = task->context == (Datum) 0 ? 'n' : ' ';
		args[1] = Int64GetDatum(task->execution_id);
		if (SPI_execute_with_args(task->sql, 2, argtypes, args, nulls, false, 0) < 0)
			elog(ERROR, "the task's SQL could not be run");
		stop_task_timers();

		if (SPI_tuptable != NULL && SPI_processed > 0 &&
			SPI_gettypeid(SPI_tuptable->tupdesc, 1) == JSONBOID)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull && JB_ROOT_IS_OBJECT(DatumGetJsonbP(d)))
			{
				MemoryContext spi = MemoryContextSwitchTo(caller_context);

				cloacina_check_context(DatumGetJsonbP(d), "the output of a SQL task");
				outcome.output = datumCopy(d, false, -1);
				MemoryContextSwitchTo(spi);
			}
		}

		/*
		 * Roll back every setting the task changed, also with a plain SET:
		 * the worker serves other tenants next, and nothing of this task may
		 * carry over to them.
		 */
		AtEOXact_GUC(false, nest);
		SetUserIdAndSecContext(saved_user, saved_sec_context);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		outcome.ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		stop_task_timers();
		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();	/* restores user and
													 * settings */
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		outcome.error = psprintf("SQLSTATE %s: %s", unpack_sql_state(edata->sqlerrcode), edata->message);
		/* an output over the limit would be over it again */
		outcome.retryable = edata->sqlerrcode != ERRCODE_PROGRAM_LIMIT_EXCEEDED;
		FreeErrorData(edata);
	}
	PG_END_TRY();

	/*
	 * a cancel request that came after the statement ended has nothing left
	 * to stop
	 */
	QueryCancelPending = false;
	return outcome;
}

/*
 * Session-level advisory locks a task took would outlive it in this shared worker and block
 * whoever uses the same keys: release them all after each task.
 */
static void
release_session_locks(void)
{
	LockReleaseSession(USER_LOCKMETHOD);	/* what pg_advisory_unlock_all()
											 * does */
}

/* Records the outcome as a completion or a failure (complete.c, fail.c); false when refused. */
static bool
record_outcome(const char *schema, ClaimedSqlTask *task, SqlTaskOutcome *outcome)
{
	TenantPath	path = cloacina_enter_tenant(schema);
	bool		accepted;

	if (outcome->ok)
		accepted = cloacina_complete_task(path.schema, task->task_id, task->fence, outcome->output);
	else
		accepted = cloacina_fail_task(path.schema, task->task_id, task->fence, outcome->error,
									  outcome->retryable);
	cloacina_leave_tenant_path(&path);
	return accepted;
}

/*
 * record_outcome in transaction 2, as the role the task's SQL ran as: on Citus a transaction
 * may not write the tenant's shards as two users (the task's writes and the outcome are one
 * remote transaction), and the role has every right the outcome needs (the tenant API runs as
 * it). A tenant without a role ran no SQL.
 */
static bool
record_outcome_as_tenant(const char *schema, ClaimedSqlTask *task, SqlTaskOutcome *outcome)
{
	Oid			saved_user;
	int			saved_sec_context;
	bool		accepted;

	if (task->role_name == NULL)
		return record_outcome(schema, task, outcome);
	GetUserIdAndSecContext(&saved_user, &saved_sec_context);
	SetUserIdAndSecContext(get_role_oid(task->role_name, false),
						   saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	/* if it fails, the unit's abort restores the user */
	accepted = record_outcome(schema, task, outcome);
	SetUserIdAndSecContext(saved_user, saved_sec_context);
	return accepted;
}

/* Transaction 1: claims a task and fills the worker's slot before the claim commits. */
static bool
claim_task(const char *schema, const char *worker_name, ClaimedSqlTask *task, MemoryContext keep)
{
	bool		found;

	cloacina_unit_begin_block(psprintf("cloacina: claiming a SQL task of tenant %s", schema));
	found = claim_one(schema, worker_name, task, keep);
	if (found)
		cloacina_sqlslot_fill(my_worker, schema, task->task_id, task->execution_id);
	cloacina_unit_commit();
	return found;
}

/*
 * When transaction 2 failed outside the task's SQL (the outcome could not be recorded): record
 * the attempt as failed, in a transaction of its own. If that fails too, the reaper ends the
 * attempt, since the worker's slot is emptied.
 */
static void
record_failure(const char *schema, ClaimedSqlTask *task, const char *why, MemoryContext scratch)
{
	SqlTaskOutcome outcome = {false, (Datum) 0, NULL, true};

	outcome.error = psprintf("the worker could not record the attempt: %s", why);
	PG_TRY();
	{
		cloacina_unit_begin_block(psprintf("cloacina: recording a failed SQL task of tenant %s", schema));
		(void) record_outcome(schema, task, &outcome);
		cloacina_unit_commit();
	}
	PG_CATCH();
	{
		cloacina_unit_recover(scratch);
	}
	PG_END_TRY();
}

/* Transaction 2: runs the task's SQL and records its outcome, together or not at all. */
static void
run_task(const char *schema, ClaimedSqlTask *task, MemoryContext scratch)
{
	PG_TRY();
	{
		SqlTaskOutcome outcome;

		cloacina_unit_begin_block(psprintf("cloacina: SQL task " INT64_FORMAT " of tenant %s",
										   task->task_id, schema));
		outcome = run_as_tenant(schema, task);
		cloacina_unit_arm_timeout();
		release_session_locks();
		if (record_outcome_as_tenant(schema, task, &outcome))
		{
			if (!outcome.ok)
				cloacina_log_event(schema, psprintf("SQL task " INT64_FORMAT " of run " INT64_FORMAT " failed: %s",
													task->task_id, task->execution_id, outcome.error));
			cloacina_unit_commit();
		}
		else
			cloacina_unit_abandon();	/* cancelled or taken over: undo the
										 * task's effects */
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		stop_task_timers();
		MemoryContextSwitchTo(scratch);
		edata = CopyErrorData();
		cloacina_unit_recover(scratch);
		record_failure(schema, task, edata->message, scratch);
	}
	PG_END_TRY();
}

/* One SQL task of "schema", claimed, run and recorded; false if none was ready. */
static bool
run_one_task(const char *schema, const char *worker_name, MemoryContext scratch)
{
	ClaimedSqlTask task;

	if (!claim_task(schema, worker_name, &task, scratch))
		return false;
	run_task(schema, &task, scratch);
	cloacina_sqlslot_empty(my_worker, NULL);
	return true;
}

/*
 * When the worker exits in the middle of a task (it ended itself because the task would not
 * stop, or it was told to shut down), the reaper may end the task's attempt at once.
 */
static void
empty_slot_at_exit(int code, Datum arg)
{
	char		held_schema[NAMEDATALEN];

	cloacina_sqlslot_empty(my_worker, held_schema);
	if (held_schema[0] != '\0')
		cloacina_due_now(held_schema);

	/*
	 * The tenant's share of the pool stays taken until this worker is back (5
	 * s): a tenant whose tasks end workers must not be able to end the next
	 * worker at once, and the next.
	 */
}

void
cloacina_sql_worker_main(Datum main_arg)
{
	char	   *worker_name;
	MemoryContext scratch;

	my_worker = DatumGetInt32(main_arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(cloacina_database, NULL, 0);
	worker_name = psprintf("cloacina sql worker %d", my_worker);
	pgstat_report_appname(worker_name);
	scratch = AllocSetContextCreate(TopMemoryContext, "cloacina sql worker", ALLOCSET_DEFAULT_SIZES);
	cancel_poll = RegisterTimeout(USER_TIMEOUT, poll_cancel_request);
	cloacina_unit_settings();
	cloacina_due_set_sql_worker_latch(my_worker);

	/*
	 * runs before the exit aborts the transaction: nothing of the task can
	 * commit any more
	 */
	before_shmem_exit(empty_slot_at_exit, (Datum) 0);

	for (;;)
	{
		char		schema[NAMEDATALEN];

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			cloacina_unit_settings();
		}

		if (cloacina_due_pick_sql_tenant(my_worker, schema))
		{
			MemoryContext old = MemoryContextSwitchTo(scratch);
			volatile bool ran = false;

			PG_TRY();
			{
				ran = run_one_task(schema, worker_name, scratch);
			}
			PG_CATCH();
			{
				cloacina_unit_recover(scratch);
				cloacina_sqlslot_empty(my_worker, NULL);
			}
			PG_END_TRY();
			MemoryContextSwitchTo(old);
			MemoryContextReset(scratch);
			cloacina_due_release_sql_tenant(my_worker, ran);
			continue;
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 cloacina_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
