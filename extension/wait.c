/*
 * wait.c: cloacina.wait() and the wake-ups that end it, and those of a claim that waits for
 * work (claim.c).
 *
 * A run's ending transaction calls cloacina_wake_waiters_at_commit(id); when that transaction
 * commits, the condition variable of the run's slot is broadcast, and every backend waiting
 * in cloacina.wait() on a run of that slot re-reads its run. Likewise a transaction that made
 * a tenant's handler tasks ready (its "ready" hint, hint.c) broadcasts the tenant's slot, and
 * every claim waiting in a tenant of that slot claims again. Slots are shared by hashing (a
 * wake-up for another run or tenant is only a spurious re-read), so the shared state is a
 * fixed array and needs no locking. Without shared_preload_libraries there is no shared
 * memory: the waits then re-read with a growing pause instead, slower but still correct.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "port/pg_bitutils.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_wait_current);

#define WAIT_SLOTS 128
#define SLOT_WORDS (WAIT_SLOTS / 64)
/*
 * Many tenant slots: a commit wakes the claims waiting in every tenant of its slot, and with
 * few slots one tenant's stream of commits would make other tenants' waiting claims look again
 * and again (a spurious look costs an empty claim statement).
 */
#define TENANT_SLOTS 4096
#define TENANT_SLOT_WORDS (TENANT_SLOTS / 64)
/* Even with wake-ups, wait() re-reads now and then: a run can also end by COMMIT PREPARED. */
#define MAX_SLEEP_MS 1000
#define MAX_POLL_SLEEP_MS 100

typedef struct WaitShared
{
	ConditionVariable run_finished[WAIT_SLOTS]; /* by run */
	ConditionVariable tasks_ready[TENANT_SLOTS];	/* by tenant */
} WaitShared;

static WaitShared *wait_shared = NULL;

/*
 * Slots whose runs ended, and slots of tenants whose tasks became ready, in the current
 * transaction: broadcast at commit.
 */
static uint64 slots_to_wake[SLOT_WORDS];
static uint64 tenant_slots_to_wake[TENANT_SLOT_WORDS];
static bool xact_callback_registered = false;

void
cloacina_wait_shmem_request(void)
{
	RequestAddinShmemSpace(sizeof(WaitShared));
}

void
cloacina_wait_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wait_shared = ShmemInitStruct("cloacina wait", sizeof(WaitShared), &found);
	if (!found)
	{
		for (int i = 0; i < WAIT_SLOTS; i++)
			ConditionVariableInit(&wait_shared->run_finished[i]);
		for (int i = 0; i < TENANT_SLOTS; i++)
			ConditionVariableInit(&wait_shared->tasks_ready[i]);
	}
	LWLockRelease(AddinShmemInitLock);
}

static int
slot_of(int64 execution_id)
{
	return (int) ((uint64) execution_id % WAIT_SLOTS);
}

static int
tenant_slot_of(const char *schema)
{
	return (int) (hash_bytes((const unsigned char *) schema, strlen(schema)) % TENANT_SLOTS);
}

/* Broadcasts the condition variable of every slot marked in "marked" ("words" words). */
static void
broadcast_marked(const uint64 *marked, int words, ConditionVariable *slots)
{
	for (int w = 0; w < words; w++)
		for (uint64 bits = marked[w]; bits != 0; bits &= bits - 1)
			ConditionVariableBroadcast(&slots[w * 64 + pg_rightmost_one_pos64(bits)]);
}

static void
wake_waiters_at_commit(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && wait_shared != NULL)
	{
		broadcast_marked(slots_to_wake, SLOT_WORDS, wait_shared->run_finished);
		broadcast_marked(tenant_slots_to_wake, TENANT_SLOT_WORDS, wait_shared->tasks_ready);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		memset(slots_to_wake, 0, sizeof(slots_to_wake));
		memset(tenant_slots_to_wake, 0, sizeof(tenant_slots_to_wake));
	}
}

/*
 * Marks "slot" of "slots" for the broadcast at commit. Registering the callback from another
 * callback (hint.c's at pre-commit) is safe: it is called from the commit on.
 */
static void
wake_at_commit(uint64 *slots, int slot)
{
	if (wait_shared == NULL)
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_waiters_at_commit, NULL);
		xact_callback_registered = true;
	}
	slots[slot / 64] |= UINT64CONST(1) << (slot % 64);
}

/* The run "execution_id" ended in this transaction: wake its waiters when it commits. */
void
cloacina_wake_waiters_at_commit(int64 execution_id)
{
	wake_at_commit(slots_to_wake, slot_of(execution_id));
}

/* Handler tasks of "schema" became ready in this transaction: wake its waiting claims at commit. */
void
cloacina_wake_claimers_at_commit(const char *schema)
{
	wake_at_commit(tenant_slots_to_wake, tenant_slot_of(schema));
}

/*
 * Sleeps until "cv" is broadcast (NULL: there is no shared memory, so a pause that grows from
 * 1 ms at each call, *poll_sleep_ms keeping it) or "deadline" comes, and at most "max_sleep_ms".
 */
static void
sleep_for_wakeup(ConditionVariable *cv, TimestampTz deadline, long max_sleep_ms, long *poll_sleep_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = (deadline == DT_NOEND) ? max_sleep_ms
		: Min((deadline - now + 999) / 1000, max_sleep_ms);

	if (cv != NULL)
		ConditionVariableTimedSleep(cv, sleep_ms, PG_WAIT_EXTENSION);
	else
	{
		sleep_ms = Min(sleep_ms, *poll_sleep_ms);
		*poll_sleep_ms = Min(*poll_sleep_ms * 2, MAX_POLL_SLEEP_MS);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	CHECK_FOR_INTERRUPTS();
}

/*
 * A claim's wait for work in "schema": begin before its first look (so that a wake-up between
 * a look and the sleep is not lost), sleep between looks, end once it has claimed or given up.
 */
void
cloacina_work_wait_begin(WorkWait *w, const char *schema)
{
	w->cv = wait_shared != NULL ? &wait_shared->tasks_ready[tenant_slot_of(schema)] : NULL;
	w->poll_sleep_ms = 1;
	if (w->cv != NULL)
		ConditionVariablePrepareToSleep(w->cv);
}

/*
 * Work that became ready without a broadcast (a hint lost, a COMMIT PREPARED) is seen at the
 * deadline: the caller's wait is its poll interval.
 */
void
cloacina_work_wait_sleep(WorkWait *w, TimestampTz deadline)
{
	sleep_for_wakeup(w->cv, deadline, LONG_MAX, &w->poll_sleep_ms);
}

void
cloacina_work_wait_end(WorkWait *w)
{
	if (w->cv != NULL)
		ConditionVariableCancelSleep();
}

static bool
is_terminal(const char *status)
{
	return strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

/* Microseconds in an interval, counting a month as 30 days like PostgreSQL does. */
int64
cloacina_interval_usecs(const Interval *span)
{
	return span->time + (int64) span->day * USECS_PER_DAY +
		(int64) span->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

/*
 * cloacina.wait(execution_id, timeout) in "schema": waits for the run and returns its (status,
 * final_context, error) once it has ended or the timeout passed.
 */
static Datum
wait_for_run(FunctionCallInfo fcinfo, const char *schema)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		execution_id;
	TimestampTz deadline = DT_NOEND;
	ConditionVariable *cv = NULL;
	long		poll_sleep_ms = 1;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("execution_id must not be NULL")));
	execution_id = PG_GETARG_INT64(0);
	if (!PG_ARGISNULL(1))
	{
		int64		usecs = cloacina_interval_usecs(PG_GETARG_INTERVAL_P(1));

		if (usecs < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("timeout must not be negative")));
		deadline = GetCurrentTimestamp() + usecs;
	}
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cloacina.wait() needs the READ COMMITTED isolation level"),
				 errdetail("In a transaction with one snapshot the run could never be seen to end.")));

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();

	if (wait_shared != NULL)
	{
		cv = &wait_shared->run_finished[slot_of(execution_id)];

		/*
		 * Before the first read, so that a wake-up between read and sleep is
		 * not lost.
		 */
		ConditionVariablePrepareToSleep(cv);
	}

	for (;;)
	{
		bool		isnull;
		char	   *status;
		TimestampTz now;

		/* in READ COMMITTED each read takes a fresh snapshot */
		cloacina_read_run_status(schema, Int64GetDatum(execution_id), false);

		status = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		now = GetCurrentTimestamp();
		if (is_terminal(status) || now >= deadline)
		{
			tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[0]);
			break;
		}
		SPI_freetuptable(SPI_tuptable);
		sleep_for_wakeup(cv, deadline, MAX_SLEEP_MS, &poll_sleep_ms);
	}

	if (cv != NULL)
		ConditionVariableCancelSleep();
	SPI_finish();
	return (Datum) 0;
}

/* cloacina.wait(execution_id, timeout): in the caller's current schema */
Datum
cloacina_wait_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, wait_for_run);
}
