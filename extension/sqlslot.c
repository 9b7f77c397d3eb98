/*
 * sqlslot.c: which SQL task each worker of the SQL-task pool is running, in shared memory.
 *
 * A pool worker fills its slot before the claim of a task commits and empties it after the
 * task's outcome is recorded (or given up). Two things read the slots:
 * - the reaper (cloacina._sql_task_alive): a running SQL task that no slot holds belongs to a
 *   worker that is gone (killed, or the server restarted after a crash), so its attempt is over
 *   at once instead of at the end of its lease;
 * - cancel and the run timeout (cloacina._cancel_sql_tasks): when the transaction that ended a
 *   run commits, the workers running tasks of that run are asked to cancel their statement. The
 *   worker polls its flag while the task's SQL runs (sqltask.c), so a request can never reach a
 *   statement other than the one it was meant for.
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_sql_task_alive);
PG_FUNCTION_INFO_V1(cloacina_cancel_sql_tasks);

typedef struct SqlSlot
{
	char		schema[NAMEDATALEN];	/* empty: the worker runs no task */
	int64		task_id;
	int64		execution_id;
	pg_atomic_uint32 cancel_requested;
} SqlSlot;

typedef struct SqlSlots
{
	LWLock	   *lock;
	SqlSlot		slot[CLOACINA_MAX_SQL_WORKERS];
} SqlSlots;

static SqlSlots *slots = NULL;

/* Runs whose SQL tasks the current transaction cancels, signalled when it commits. */
typedef struct PendingCancel
{
	char		schema[NAMEDATALEN];
	int64		execution_id;
} PendingCancel;

static List *pending_cancels = NIL;
static bool callback_registered = false;

void
cloacina_sqlslot_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SqlSlots)));
	RequestNamedLWLockTranche("cloacina sql slots", 1);
}

void
cloacina_sqlslot_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	slots = ShmemInitStruct("cloacina sql slots", sizeof(SqlSlots), &found);
	if (!found)
	{
		memset(slots, 0, sizeof(SqlSlots));
		slots->lock = &(GetNamedLWLockTranche("cloacina sql slots"))->lock;
		for (int i = 0; i < CLOACINA_MAX_SQL_WORKERS; i++)
			pg_atomic_init_u32(&slots->slot[i].cancel_requested, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
cloacina_sqlslot_fill(int worker, const char *schema, int64 task_id, int64 execution_id)
{
	SqlSlot    *s = &slots->slot[worker];

	LWLockAcquire(slots->lock, LW_EXCLUSIVE);
	strlcpy(s->schema, schema, NAMEDATALEN);
	s->task_id = task_id;
	s->execution_id = execution_id;
	pg_atomic_write_u32(&s->cancel_requested, 0);
	LWLockRelease(slots->lock);
}

/* Empties the worker's slot; "held_schema" (if not NULL) gets the schema it held, or "". */
void
cloacina_sqlslot_empty(int worker, char *held_schema)
{
	SqlSlot    *s = &slots->slot[worker];

	LWLockAcquire(slots->lock, LW_EXCLUSIVE);
	if (held_schema != NULL)
		strlcpy(held_schema, s->schema, NAMEDATALEN);
	s->schema[0] = '\0';
	s->task_id = 0;
	s->execution_id = 0;
	pg_atomic_write_u32(&s->cancel_requested, 0);
	LWLockRelease(slots->lock);
}

/* Async-signal-safe: read from the worker's timeout handler. */
bool
cloacina_sqlslot_cancel_requested(int worker)
{
	return pg_atomic_read_u32(&slots->slot[worker].cancel_requested) != 0;
}

/* Only a tenant the caller may use: a tenant asks about, or cancels, its own tasks alone. */
static char *
schema_argument(FunctionCallInfo fcinfo)
{
	char	   *schema = text_to_cstring(PG_GETARG_TEXT_PP(0));

	(void) cloacina_require_tenant(schema);
	return schema;
}

/* Does a pool worker run task "task_id" of "schema" now? */
bool
cloacina_sqlslot_runs(const char *schema, int64 task_id)
{
	bool		alive = false;

	if (slots == NULL)
		return false;
	LWLockAcquire(slots->lock, LW_SHARED);
	for (int i = 0; i < cloacina_sql_workers && !alive; i++)
		alive = slots->slot[i].task_id == task_id && strcmp(slots->slot[i].schema, schema) == 0;
	LWLockRelease(slots->lock);
	return alive;
}

/* cloacina._sql_task_alive(schema text, task_id bigint): does a pool worker run it now? */
Datum
cloacina_sql_task_alive(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	PG_RETURN_BOOL(cloacina_sqlslot_runs(schema_argument(fcinfo), PG_GETARG_INT64(1)));
}

static void
signal_cancels_at_commit(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event == XACT_EVENT_COMMIT && pending_cancels != NIL && slots != NULL)
	{
		LWLockAcquire(slots->lock, LW_SHARED);
		foreach(lc, pending_cancels)
		{
			PendingCancel *p = lfirst(lc);

			for (int i = 0; i < cloacina_sql_workers; i++)
			{
				SqlSlot    *s = &slots->slot[i];

				if (s->execution_id == p->execution_id && strcmp(s->schema, p->schema) == 0)
					pg_atomic_write_u32(&s->cancel_requested, 1);
			}
		}
		LWLockRelease(slots->lock);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		pending_cancels = NIL;	/* lived in TopTransactionContext */
}

/*
 * cloacina._cancel_sql_tasks(schema text, execution_id bigint): when this transaction commits,
 * the pool workers running SQL tasks of the run cancel their statement (and roll it back).
 */
Datum
cloacina_cancel_sql_tasks(PG_FUNCTION_ARGS)
{
	MemoryContext old;
	PendingCancel *p;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || slots == NULL)
		PG_RETURN_VOID();
	if (!callback_registered)
	{
		RegisterXactCallback(signal_cancels_at_commit, NULL);
		callback_registered = true;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc0(sizeof(PendingCancel));
	strlcpy(p->schema, schema_argument(fcinfo), NAMEDATALEN);
	p->execution_id = PG_GETARG_INT64(1);
	pending_cancels = lappend(pending_cancels, p);
	MemoryContextSwitchTo(old);
	PG_RETURN_VOID();
}
