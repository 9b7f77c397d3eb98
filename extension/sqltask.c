/*
 * sqltask.c: the pool of background workers that run SQL tasks ("kind": "sql").
 *
 * Each pool worker takes a tenant by weighted fair share (due.c), and in ONE transaction claims
 * one of its ready SQL tasks, runs the task's SQL as the tenant's role with the tenant's
 * search_path, and records the outcome with cloacina._complete() or cloacina._fail(). Because
 * claim, work and completion commit together, a crash anywhere leaves the task ready and its
 * effects undone: a SQL task's work is applied exactly once.
 *
 * The task runs in a subtransaction under SetUserIdAndSecContext with
 * SECURITY_RESTRICTED_OPERATION, so it has exactly the tenant's privileges and cannot SET ROLE
 * back to the worker's superuser. The task's timeout_ms bounds it as a statement timeout. Its
 * input context is $1 (jsonb) and its run id $2 (bigint);
 * if its last statement returns a row whose first column is a JSON object, that is its output.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/latch.h"
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
#include "utils/wait_event.h"

#include "cloacina.h"

PGDLLEXPORT void cloacina_sql_worker_main(Datum main_arg);

typedef struct ClaimedSqlTask
{
	int64		task_id;
	int64		execution_id;
	int64		fence;
	char	   *sql;
	Datum		context;		/* jsonb */
	char	   *role_name;
	int64		timeout_ms;		/* 0: none */
} ClaimedSqlTask;

/* Outcome of running a task's SQL: the output (jsonb) or an error message with its SQLSTATE. */
typedef struct SqlTaskOutcome
{
	bool		ok;
	Datum		output;
	char	   *error;
	bool		retryable;
} SqlTaskOutcome;

static bool
claim_one(const char *schema, const char *worker_name, ClaimedSqlTask *task)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, INTERVALOID};
	Datum		args[3];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	args[0] = CStringGetTextDatum(schema);
	args[1] = CStringGetTextDatum(worker_name);
	args[2] = DirectFunctionCall3(interval_in, CStringGetDatum("1 hour"),
								  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	if (SPI_execute_with_args("SELECT * FROM cloacina._claim_sql($1, $2, $3)", 3, argtypes, args,
							  NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "cloacina._claim_sql failed for tenant %s", schema);
	if (SPI_processed == 0)
		return false;

	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	task->task_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	task->execution_id = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
	task->fence = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
	task->sql = SPI_getvalue(row, desc, 4);
	d = SPI_getbinval(row, desc, 5, &isnull);
	task->context = isnull ? (Datum) 0 : SPI_datumTransfer(d, false, -1);
	task->role_name = SPI_getvalue(row, desc, 6);
	d = SPI_getbinval(row, desc, 7, &isnull);
	task->timeout_ms = isnull ? 0 : DatumGetInt64(d);
	return true;
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

		SetUserIdAndSecContext(tenant_role, saved_sec_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		(void) set_config_option("search_path", quote_identifier(schema), PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		/* statement_timeout is armed by the client protocol loop, which a worker has not */
		if (task->timeout_ms > 0)
			enable_timeout_after(STATEMENT_TIMEOUT, (int) Min(task->timeout_ms, INT_MAX));

		args[0] = task->context;
		nulls[0] = task->context == (Datum) 0 ? 'n' : ' ';
		args[1] = Int64GetDatum(task->execution_id);
		if (SPI_execute_with_args(task->sql, 2, argtypes, args, nulls, false, 0) < 0)
			elog(ERROR, "the task's SQL could not be run");

		if (SPI_tuptable != NULL && SPI_processed > 0 &&
			SPI_gettypeid(SPI_tuptable->tupdesc, 1) == JSONBOID)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull && JB_ROOT_IS_OBJECT(DatumGetJsonbP(d)))
			{
				MemoryContext spi = MemoryContextSwitchTo(caller_context);

				outcome.output = datumCopy(d, false, -1);
				MemoryContextSwitchTo(spi);
			}
		}
		if (task->timeout_ms > 0)
			disable_timeout(STATEMENT_TIMEOUT, false);
		/*
		 * Roll back every setting the task changed, also with a plain SET: the worker serves
		 * other tenants next, and nothing of this task may carry over to them.
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

		if (task->timeout_ms > 0)
			disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();	/* restores user and settings */
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		outcome.error = psprintf("SQLSTATE %s: %s", unpack_sql_state(edata->sqlerrcode), edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return outcome;
}

/*
 * Session-level advisory locks a task took would outlive it in this shared worker and block
 * whoever uses the same keys: release them all after each task.
 */
static void
release_session_locks(void)
{
	LockReleaseSession(USER_LOCKMETHOD);	/* what pg_advisory_unlock_all() does */
}

static void
record_outcome(const char *schema, ClaimedSqlTask *task, SqlTaskOutcome *outcome)
{
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	args[0] = CStringGetTextDatum(schema);
	args[1] = Int64GetDatum(task->task_id);
	args[2] = Int64GetDatum(task->fence);
	if (outcome->ok)
	{
		Oid			argtypes[4] = {TEXTOID, INT8OID, INT8OID, JSONBOID};

		args[3] = outcome->output;
		nulls[3] = outcome->output == (Datum) 0 ? 'n' : ' ';
		SPI_execute_with_args("SELECT cloacina._complete($1, $2, $3, $4)", 4, argtypes, args, nulls,
							  false, 1);
	}
	else
	{
		Oid			argtypes[5] = {TEXTOID, INT8OID, INT8OID, TEXTOID, BOOLOID};

		args[3] = CStringGetTextDatum(outcome->error);
		args[4] = BoolGetDatum(outcome->retryable);
		SPI_execute_with_args("SELECT cloacina._fail($1, $2, $3, $4, $5)", 5, argtypes, args, nulls,
							  false, 1);
	}
}

/* Claims, runs and records one SQL task of "schema" in one transaction; false if none was ready. */
static bool
run_one_task(const char *schema, const char *worker_name)
{
	ClaimedSqlTask task;
	SqlTaskOutcome outcome;
	bool		found;

	cloacina_unit_begin(psprintf("cloacina: SQL task of tenant %s", schema));

	found = claim_one(schema, worker_name, &task);
	if (found)
	{
		outcome = run_as_tenant(schema, &task);
		release_session_locks();
		record_outcome(schema, &task, &outcome);
	}

	cloacina_unit_commit();
	return found;
}

void
cloacina_sql_worker_main(Datum main_arg)
{
	int			worker = DatumGetInt32(main_arg);
	char	   *worker_name;
	MemoryContext scratch;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(cloacina_database, NULL, 0);
	worker_name = psprintf("cloacina sql worker %d", worker);
	pgstat_report_appname(worker_name);
	scratch = AllocSetContextCreate(TopMemoryContext, "cloacina sql worker", ALLOCSET_DEFAULT_SIZES);
	cloacina_due_set_sql_worker_latch(worker);

	for (;;)
	{
		char		schema[NAMEDATALEN];

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (cloacina_due_pick_sql_tenant(worker, schema))
		{
			MemoryContext old = MemoryContextSwitchTo(scratch);
			volatile bool ran = false;

			PG_TRY();
			{
				ran = run_one_task(schema, worker_name);
			}
			PG_CATCH();
			{
				cloacina_unit_recover(scratch);
			}
			PG_END_TRY();
			MemoryContextSwitchTo(old);
			MemoryContextReset(scratch);
			cloacina_due_release_sql_tenant(worker, ran);
			continue;
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 cloacina_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
