/*
 * due.c: the shared-memory table of tenants that need the background worker, and when.
 *
 * One entry per tenant schema: the next time something is due there (a lease or timeout that can
 * expire, a retry or delayed run coming due, a schedule slot, runs to prune), whether ready SQL
 * tasks may be waiting, and the tenant's SQL-task limits. Backends push earlier due times with
 * cloacina._due() when their transaction commits (never before: the worker must see the rows it
 * is woken for); the scheduler rebuilds each entry after looking at the tenant. So the scheduler
 * only ever looks at tenants with something due, and idle tenants cost nothing.
 *
 * The same table feeds the SQL-task pool: each pool worker takes the tenant with ready SQL work
 * that has the fewest running tasks per unit of weight, under the tenant's max_running.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/binaryheap.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_due);
PG_FUNCTION_INFO_V1(cloacina_preloaded_fn);
PG_FUNCTION_INFO_V1(cloacina_scheduler_status);

typedef struct TenantDue
{
	char		schema[NAMEDATALEN];	/* hash key */
	TimestampTz due;			/* DT_NOEND: nothing due */
	bool		sql_ready;		/* ready SQL tasks may be waiting */
	int			running_sql;	/* SQL tasks the pool runs for this tenant now */
	int			max_running;	/* 0: the default cap
								 * (cloacina.sql_tenant_max_running) */
	int			weight;
	int			failed_ticks;	/* ticks in a row that failed: the backoff of
								 * the next */
	uint64		last_served;	/* breaks ties between equally loaded tenants */
} TenantDue;

typedef struct DueShared
{
	LWLock	   *lock;
	Latch	   *scheduler_latch;
	TimestampTz scheduler_wakeup;	/* when the scheduler plans to look again */
	bool		overflow;		/* an entry did not fit: the scheduler must
								 * scan everything */
	bool		relay;			/* a Citus worker node: due times go to the
								 * coordinator (relay.c), nothing is served
								 * here */
	uint64		serve_counter;
	Latch	   *sql_worker_latch[CLOACINA_MAX_SQL_WORKERS];
	char		sql_worker_tenant[CLOACINA_MAX_SQL_WORKERS][NAMEDATALEN];
} DueShared;

static DueShared *due_shared = NULL;
static HTAB *due_table = NULL;

/* Due times pushed by the current transaction, applied at commit. */
typedef CloacinaDue PendingDue;

static List *pending = NIL;
static bool xact_callback_registered = false;

void
cloacina_due_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(DueShared)) +
						   hash_estimate_size(cloacina_max_tenants, sizeof(TenantDue)));
	RequestNamedLWLockTranche("cloacina", 1);
}

void
cloacina_due_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	due_shared = ShmemInitStruct("cloacina due", sizeof(DueShared), &found);
	if (!found)
	{
		memset(due_shared, 0, sizeof(DueShared));
		due_shared->lock = &(GetNamedLWLockTranche("cloacina"))->lock;
		due_shared->scheduler_wakeup = DT_NOBEGIN;
	}
	memset(&info, 0, sizeof(info));
	info.keysize = NAMEDATALEN;
	info.entrysize = sizeof(TenantDue);
	due_table = ShmemInitHash("cloacina due tenants", cloacina_max_tenants, cloacina_max_tenants,
							  &info, HASH_ELEM | HASH_STRINGS);
	LWLockRelease(AddinShmemInitLock);
}

/* The entry of a schema, created when missing; NULL (and overflow noted) when the table is full. */
static TenantDue *
entry_for(const char *schema)
{
	bool		found;
	TenantDue  *e = hash_search(due_table, schema, HASH_ENTER_NULL, &found);

	if (e == NULL)
	{
		due_shared->overflow = true;
		return NULL;
	}
	if (!found)
	{
		e->due = DT_NOEND;
		e->sql_ready = false;
		e->running_sql = 0;
		e->max_running = 0;
		e->weight = 1;
		e->failed_ticks = 0;
		e->last_served = 0;
	}
	return e;
}

static void
apply_pending_at_commit(XactEvent event, void *arg)
{
	ListCell   *lc;
	bool		wake_scheduler = false;
	bool		wake_sql = false;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	if (event == XACT_EVENT_COMMIT && pending != NIL && due_shared != NULL)
	{
		LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
		foreach(lc, pending)
		{
			PendingDue *p = (PendingDue *) lfirst(lc);
			TenantDue  *e = entry_for(p->schema);

			if (e == NULL)
			{
				wake_scheduler = true;
				continue;
			}
			if (p->due < e->due)
				e->due = p->due;
			if (p->due <= due_shared->scheduler_wakeup || due_shared->overflow)
				wake_scheduler = true;
			if (p->sql_ready)
			{
				e->sql_ready = true;
				wake_sql = true;
			}
		}

		/*
		 * a relaying scheduler passes every push on at once; no SQL is run
		 * here
		 */
		if (due_shared->relay)
		{
			wake_scheduler = true;
			wake_sql = false;
		}
		LWLockRelease(due_shared->lock);
		if (wake_scheduler && due_shared->scheduler_latch != NULL)
			SetLatch(due_shared->scheduler_latch);
		if (wake_sql)
			cloacina_due_wake_sql_workers();
	}
	/* The list lived in TopTransactionContext, which is going away. */
	pending = NIL;
}

/*
 * From the end of this transaction on, the background worker looks at the tenant no later than
 * "due" (and the SQL pool knows it may have ready SQL tasks when sql_ready). The caller has
 * checked that the schema is one it may use. Without shared_preload_libraries it does nothing.
 */
void
cloacina_due_push(const char *schema, TimestampTz due, bool sql_ready)
{
	MemoryContext old;
	PendingDue *p;
	ListCell   *lc;

	if (due_shared == NULL || strlen(schema) >= NAMEDATALEN)
		return;

	/*
	 * A time in the past means now: an older one (a run_at a tenant chose,
	 * say) would put the tenant ahead of tenants that have waited longer, as
	 * the scheduler takes the most overdue first.
	 */
	due = Max(due, GetCurrentTimestamp());
	/* One pending entry per schema and transaction: keep the earliest time. */
	foreach(lc, pending)
	{
		p = (PendingDue *) lfirst(lc);
		if (strcmp(p->schema, schema) == 0)
		{
			p->due = Min(p->due, due);
			p->sql_ready |= sql_ready;
			return;
		}
	}
	if (!xact_callback_registered)
	{
		RegisterXactCallback(apply_pending_at_commit, NULL);
		xact_callback_registered = true;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc0(sizeof(PendingDue));
	strlcpy(p->schema, schema, NAMEDATALEN);
	p->due = due;
	p->sql_ready = sql_ready;
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);
}

/*
 * cloacina._due(schema text, due_at timestamptz, sql_ready boolean): from the end of this
 * transaction on, the background worker looks at the tenant no later than due_at (and the SQL
 * pool knows it may have ready SQL tasks). Without shared_preload_libraries it does nothing.
 */
Datum
cloacina_due(PG_FUNCTION_ARGS)
{
	char	   *schema;
	TimestampTz due;
	bool		sql_ready = !PG_ARGISNULL(2) && PG_GETARG_BOOL(2);

	if (due_shared == NULL || PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_VOID();
	schema = text_to_cstring(PG_GETARG_TEXT_PP(0));
	due = PG_GETARG_TIMESTAMPTZ(1);
	if (strlen(schema) >= NAMEDATALEN)
		PG_RETURN_VOID();

	/*
	 * Only for a tenant the caller may use: a tenant can hurry the scheduler
	 * for itself, not for others, and cannot fill the table with names of
	 * schemas that are not tenants.
	 */
	(void) cloacina_require_tenant(schema);

	cloacina_due_push(schema, due, sql_ready);
	PG_RETURN_VOID();
}

Datum
cloacina_preloaded_fn(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(cloacina_preloaded);
}

/* Whether an entry failed to fit since the last call (the scheduler then scans every tenant). */
bool
cloacina_due_take_overflow(void)
{
	bool		overflow;

	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	overflow = due_shared->overflow;
	due_shared->overflow = false;
	LWLockRelease(due_shared->lock);
	return overflow;
}

void
cloacina_due_set_scheduler_latch(void)
{
	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	due_shared->scheduler_latch = MyLatch;
	LWLockRelease(due_shared->lock);
}

/* Orders the binary heap of cloacina_due_take: the tenant due last on top. */
static int
compare_due(Datum a, Datum b, void *arg)
{
	TimestampTz x = ((TenantDue *) DatumGetPointer(a))->due;
	TimestampTz y = ((TenantDue *) DatumGetPointer(b))->due;

	return (x > y) - (x < y);
}

/*
 * Copies into "schemas" the tenants due at "now", the most overdue first, at most max_schemas of
 * them, and marks them not due: the tick that follows sets their next time, and anything a
 * backend pushes meanwhile is kept because it can only make the time earlier. Returns how many
 * were taken. Most overdue first, not in the table's order: when more tenants are due than the
 * scheduler can tick before they are due again, every tenant still has its turn (in table order
 * the same tenants were taken every time and the others never: regress/t/007_overdue_first.pl).
 * A heap of max_schemas keeps the most overdue in one pass over the table.
 */
int
cloacina_due_take(TimestampTz now, char (*schemas)[NAMEDATALEN], int max_schemas)
{
	HASH_SEQ_STATUS seq;
	TenantDue  *e;
	binaryheap *picked = binaryheap_allocate(max_schemas, compare_due, NULL);
	int			n;

	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, due_table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->due > now)
			continue;
		if (picked->bh_size < max_schemas)
			binaryheap_add(picked, PointerGetDatum(e));
		else if (e->due < ((TenantDue *) DatumGetPointer(binaryheap_first(picked)))->due)
			binaryheap_replace_first(picked, PointerGetDatum(e));
	}
	/* the heap yields the tenant due last first: fill from the end */
	n = picked->bh_size;
	for (int i = n - 1; i >= 0; i--)
	{
		e = (TenantDue *) DatumGetPointer(binaryheap_remove_first(picked));
		strlcpy(schemas[i], e->schema, NAMEDATALEN);
		e->due = DT_NOEND;
	}
	LWLockRelease(due_shared->lock);
	binaryheap_free(picked);
	return n;
}

void
cloacina_due_after_tick(const char *schema, TimestampTz next_due, bool sql_ready,
						int max_running, int weight)
{
	TenantDue  *e;

	/* A time in the past means now, as in cloacina_due_push. */
	next_due = Max(next_due, GetCurrentTimestamp());
	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	e = entry_for(schema);
	if (e != NULL)
	{
		e->due = Min(e->due, next_due);
		e->sql_ready |= sql_ready;
		e->max_running = max_running;
		e->weight = Max(weight, 1);
		e->failed_ticks = 0;
	}
	LWLockRelease(due_shared->lock);
	if (sql_ready)
		cloacina_due_wake_sql_workers();
}

/*
 * After a tenant's tick failed (typically a lock the tenant holds on its own tables outlasted
 * cloacina.worker_lock_timeout): look again after a backoff that doubles from 250 ms up to the
 * naptime, so a tenant that keeps its tables locked costs the scheduler a bounded share.
 */
void
cloacina_due_after_failed_tick(const char *schema)
{
	TenantDue  *e;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	e = entry_for(schema);
	if (e != NULL)
	{
		int			shift = Min(e->failed_ticks, 16);
		int64		backoff_ms = Min((int64) 250 << shift, (int64) cloacina_naptime_ms);

		e->failed_ticks++;
		e->due = Min(e->due, TimestampTzPlusMilliseconds(now, backoff_ms));
	}
	LWLockRelease(due_shared->lock);
}

/* The scheduler looks at the tenant at once (outside any transaction: a worker's own finding). */
void
cloacina_due_now(const char *schema)
{
	TenantDue  *e;

	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	e = entry_for(schema);
	if (e != NULL)
		e->due = DT_NOBEGIN;
	LWLockRelease(due_shared->lock);
	if (due_shared->scheduler_latch != NULL)
		SetLatch(due_shared->scheduler_latch);
}

/*
 * Whether this node's scheduler relays (relay.c) rather than serves. While it does, every commit
 * that pushes a due time wakes it, and the SQL-task pool takes no tenant.
 */
void
cloacina_due_set_relay(bool relay)
{
	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	due_shared->relay = relay;
	LWLockRelease(due_shared->lock);
}

/*
 * Moves out of the table every entry with something due or ready SQL work, at most max_entries
 * of them, for the relay to pass on; returns how many.
 */
int
cloacina_due_take_all(CloacinaDue *entries, int max_entries)
{
	HASH_SEQ_STATUS seq;
	TenantDue  *e;
	int			n = 0;

	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, due_table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->due == DT_NOEND && !e->sql_ready)
			continue;
		strlcpy(entries[n].schema, e->schema, NAMEDATALEN);
		entries[n].due = e->due;
		entries[n].sql_ready = e->sql_ready;
		hash_search(due_table, e->schema, HASH_REMOVE, NULL);
		if (++n == max_entries)
		{
			hash_seq_term(&seq);
			break;
		}
	}
	LWLockRelease(due_shared->lock);
	return n;
}

/* Puts back what cloacina_due_take_all took, when it could not be passed on. */
void
cloacina_due_put_back(const CloacinaDue *entries, int n)
{
	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		TenantDue  *e = entry_for(entries[i].schema);

		if (e == NULL)
			continue;
		e->due = Min(e->due, entries[i].due);
		e->sql_ready |= entries[i].sql_ready;
	}
	LWLockRelease(due_shared->lock);
}

/* Drops the entry of a tenant that no longer exists. */
void
cloacina_due_forget(const char *schema)
{
	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	hash_search(due_table, schema, HASH_REMOVE, NULL);
	LWLockRelease(due_shared->lock);
}

/* The earliest due time, capped at "latest"; recorded so that backends know when to wake us. */
TimestampTz
cloacina_due_next_wakeup(TimestampTz now, TimestampTz latest)
{
	HASH_SEQ_STATUS seq;
	TenantDue  *e;
	TimestampTz next = latest;

	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, due_table);
	while ((e = hash_seq_search(&seq)) != NULL)
		next = Min(next, e->due);
	due_shared->scheduler_wakeup = Max(next, now);
	LWLockRelease(due_shared->lock);
	return next;
}

void
cloacina_due_wake_sql_workers(void)
{
	for (int i = 0; i < CLOACINA_MAX_SQL_WORKERS; i++)
	{
		Latch	   *latch = due_shared->sql_worker_latch[i];

		if (latch != NULL)
			SetLatch(latch);
	}
}

/*
 * Registers SQL worker "worker"'s latch and returns to the pool whatever a previous incarnation
 * of it (killed in the middle of a task) still held.
 */
void
cloacina_due_set_sql_worker_latch(int worker)
{
	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	due_shared->sql_worker_latch[worker] = MyLatch;
	LWLockRelease(due_shared->lock);
	cloacina_due_release_sql_tenant(worker, true);
}

/* A tenant's cap on running SQL tasks: its own max_running, or the pool's default for all. */
static int
sql_cap(TenantDue *e)
{
	if (e->max_running > 0)
		return e->max_running;
	if (cloacina_sql_tenant_max_running > 0)
		return cloacina_sql_tenant_max_running;
	return Max(cloacina_sql_workers - 1, 1);
}

/*
 * Weighted fair share: among tenants with ready SQL work and room under their cap, the one
 * with the fewest running tasks per unit of weight (ties: least recently served). Its ready flag
 * is cleared before the claim, so a commit that makes new SQL work ready afterwards sets it again
 * and nothing is missed.
 */
bool
cloacina_due_pick_sql_tenant(int worker, char *schema)
{
	HASH_SEQ_STATUS seq;
	TenantDue  *e;
	TenantDue  *best = NULL;

	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	if (due_shared->relay)
	{
		LWLockRelease(due_shared->lock);
		return false;
	}
	hash_seq_init(&seq, due_table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (!e->sql_ready || e->running_sql >= sql_cap(e))
			continue;
		if (best == NULL ||
			(int64) e->running_sql * best->weight < (int64) best->running_sql * e->weight ||
			((int64) e->running_sql * best->weight == (int64) best->running_sql * e->weight &&
			 e->last_served < best->last_served))
			best = e;
	}
	if (best != NULL)
	{
		best->running_sql++;
		best->sql_ready = false;
		best->last_served = ++due_shared->serve_counter;
		strlcpy(schema, best->schema, NAMEDATALEN);
		strlcpy(due_shared->sql_worker_tenant[worker], best->schema, NAMEDATALEN);
	}
	LWLockRelease(due_shared->lock);
	return best != NULL;
}

void
cloacina_due_release_sql_tenant(int worker, bool maybe_more)
{
	TenantDue  *e;
	char	   *schema = due_shared->sql_worker_tenant[worker];

	LWLockAcquire(due_shared->lock, LW_EXCLUSIVE);
	if (schema[0] != '\0')
	{
		e = hash_search(due_table, schema, HASH_FIND, NULL);
		if (e != NULL)
		{
			e->running_sql = Max(e->running_sql - 1, 0);
			e->sql_ready |= maybe_more;
		}
		schema[0] = '\0';
	}
	LWLockRelease(due_shared->lock);
}

/*
 * cloacina.scheduler_status(): the tenants the scheduler tracks, how many are due now (waiting
 * for their tick) and how long the most overdue has waited. A due count that stays high and a
 * wait of more than a few seconds say the scheduler cannot keep up.
 */
Datum
cloacina_scheduler_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	HASH_SEQ_STATUS seq;
	TenantDue  *e;
	int			tracked = 0;
	int			due = 0;
	TimestampTz oldest = DT_NOEND;
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (due_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cloacina's scheduler is not running: cloacina is not in shared_preload_libraries")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "cloacina.scheduler_status must return a record");

	LWLockAcquire(due_shared->lock, LW_SHARED);
	hash_seq_init(&seq, due_table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		tracked++;
		if (e->due <= now)
		{
			due++;
			oldest = Min(oldest, e->due);
		}
	}
	LWLockRelease(due_shared->lock);

	values[0] = Int32GetDatum(tracked);
	values[1] = Int32GetDatum(due);
	if (due > 0)
		values[2] = Float8GetDatum((double) (now - oldest) / USECS_PER_SEC);
	else
		nulls[2] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
