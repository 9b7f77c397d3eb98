/*
 * claim_floor.c: where a tenant's claims start reading its queue of ready handler tasks.
 *
 * A claim walks the index tasks_claim_key, the tenant's ready handler tasks by claim key
 * (-priority, ready_at, id). A claimed task leaves its entry in that index until vacuum
 * removes it, so the index of a busy tenant starts with a run of dead entries, and a claim that
 * starts at the beginning reads past all of them (3 ms per claim past 440,000, and vacuum of a
 * large tasks table takes minutes: docs/performance.md). The claim floor of a tenant is a key
 * below which the tenant has no ready task; its claims start there.
 *
 * The floor holds if every committed ready task has a key at or above it, or was made ready by
 * a transaction that is still registered here as pending:
 * - A transaction that makes handler tasks ready (cloacina_claim_floor_lower) lowers the floor
 *   to their least key, registers that key as pending until it ends, and bumps the version.
 * - A claim raises the floor now and then (claim_floor_refresh): it reads the floor, the version
 *   and the least pending key, then, in a new snapshot, finds the first ready task at or above
 *   the floor, of any name, claimed by an uncommitted claim or not, due or not. If the version
 *   has not moved it sets the floor to the lesser of that task's key and the pending key (if it
 *   moved, it may only lower the floor), and bumps the version. A ready task it could not see
 *   was made ready by a transaction that had registered before it read (its pending key counts)
 *   or after (the version moved, and that transaction lowered the floor to its own key).
 * - What makes tasks ready without a key (the SQL functions that hint "ready") lowers the floor
 *   to the least key. What makes them ready and does not come through here at all (a tenant's
 *   own UPDATE of its tasks, COMMIT PREPARED after the pending key went at PREPARE) is found by
 *   the rescan from the least key that every floor gets every second (up to ten while a rescan
 *   reads a long run of dead entries): such a task is claimed late, never lost.
 * A slot per hash of the tenant's schema oid holds one tenant's floor at a time (a tenant
 * without one starts at the least key and takes the slot over at its next refresh); one LWLock
 * guards it all, taken shared by each claim. Without shared memory, and where Citus is installed
 * (a tenant's clients may be served by several nodes, each with its own shared memory), claims
 * start at the least key.
 */
#include "postgres.h"

#include <limits.h>

#include "access/twophase.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "cloacina.h"

#define FLOOR_SLOTS 4096
/* the tenants one transaction can make tasks ready in and still have a floor raised */
#define PENDING_PER_BACKEND 4
/*
 * How often a tenant's floor is raised, and how often it is found again from the least key:
 * every second, or less often when a rescan reads a long run of dead entries, so that rescans
 * take at most a twentieth of the time, but at least every ten seconds.
 */
#define REFRESH_INTERVAL_US 5000
#define RESCAN_INTERVAL_US 1000000
#define RESCAN_COST_FACTOR 20
#define MAX_RESCAN_INTERVAL_US 10000000

bool		cloacina_claim_floors = true;

typedef struct FloorSlot
{
	Oid			tenant;			/* InvalidOid: no tenant's */
	ClaimKey	floor;
	uint64		version;		/* bumped by every change of the floor */
	TimestampTz refreshed_at;
	TimestampTz rescanned_at;
	int64		rescan_usecs;	/* how long the last rescan took */
} FloorSlot;

typedef struct PendingKeys
{
	int			n;
	int			slot[PENDING_PER_BACKEND];
	ClaimKey	key[PENDING_PER_BACKEND];
} PendingKeys;

typedef struct FloorShared
{
	LWLock	   *lock;
	int			unregistered;	/* transactions that lowered more tenants than
								 * they could register: no floor rises while
								 * any runs */
	int			n_procs;
	FloorSlot	slots[FLOOR_SLOTS];
	PendingKeys pending[FLEXIBLE_ARRAY_MEMBER]; /* by process number */
} FloorShared;

static FloorShared *floors = NULL;

/* what this backend registered in the current transaction, undone when it ends */
static bool registered = false;
static int	my_unregistered = 0;
static bool callback_registered = false;
static int	citus_installed = -1;

const ClaimKey cloacina_least_claim_key = {PG_INT32_MIN, DT_NOBEGIN, PG_INT64_MIN};
static const ClaimKey greatest_key = {PG_INT32_MAX, DT_NOEND, PG_INT64_MAX};

/* The first ready handler task at or above a key: of any name, claimed or not, due or not. */
static const char *const head_sql =
"SELECT -t.priority, t.ready_at, t.id FROM %1$s.tasks t"
" WHERE t.status = 'ready' AND t.kind = 'handler'"
"   AND (-t.priority, t.ready_at, t.id) >= ($1, $2, $3)"
" ORDER BY -t.priority, t.ready_at, t.id LIMIT 1";

static int
n_procs(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static int
my_proc_number(void)
{
#if PG_VERSION_NUM >= 170000
	return MyProcNumber;
#else
	return MyProc->pgprocno;
#endif
}

void
cloacina_claim_floor_shmem_request(void)
{
	RequestAddinShmemSpace(add_size(offsetof(FloorShared, pending),
									mul_size(n_procs(), sizeof(PendingKeys))));
	RequestNamedLWLockTranche("cloacina claim floors", 1);
}

void
cloacina_claim_floor_shmem_startup(void)
{
	bool		found;
	Size		size = add_size(offsetof(FloorShared, pending), mul_size(n_procs(), sizeof(PendingKeys)));

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	floors = ShmemInitStruct("cloacina claim floors", size, &found);
	if (!found)
	{
		memset(floors, 0, size);
		floors->lock = &(GetNamedLWLockTranche("cloacina claim floors"))->lock;
		floors->n_procs = n_procs();
	}
	LWLockRelease(AddinShmemInitLock);
}

int
cloacina_compare_claim_keys(const ClaimKey *a, const ClaimKey *b)
{
	if (a->neg_priority != b->neg_priority)
		return a->neg_priority < b->neg_priority ? -1 : 1;
	if (a->ready_at != b->ready_at)
		return a->ready_at < b->ready_at ? -1 : 1;
	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return 0;
}

static FloorSlot *
slot_of(Oid tenant)
{
	return &floors->slots[tenant % FLOOR_SLOTS];
}

static void
forget_pending_at_end(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	if (!registered)
		return;
	LWLockAcquire(floors->lock, LW_EXCLUSIVE);
	floors->pending[my_proc_number()].n = 0;
	floors->unregistered -= my_unregistered;
	LWLockRelease(floors->lock);
	registered = false;
	my_unregistered = 0;
}

/*
 * The transaction makes handler tasks of "schema" ready, none with a key below "key": lowers
 * the tenant's floor to it and keeps it pending until the transaction ends. Call it before the
 * transaction commits.
 */
void
cloacina_claim_floor_lower(const char *schema, const ClaimKey *key)
{
	Oid			tenant;
	FloorSlot  *slot;
	PendingKeys *mine;
	int			i;

	if (floors == NULL || my_proc_number() >= floors->n_procs)
		return;
	tenant = get_namespace_oid(schema, true);
	if (!OidIsValid(tenant))
		return;
	if (!callback_registered)
	{
		RegisterXactCallback(forget_pending_at_end, NULL);
		callback_registered = true;
	}
	slot = slot_of(tenant);
	mine = &floors->pending[my_proc_number()];
	LWLockAcquire(floors->lock, LW_EXCLUSIVE);
	if (slot->tenant == tenant && cloacina_compare_claim_keys(key, &slot->floor) < 0)
		slot->floor = *key;
	slot->version++;
	for (i = 0; i < mine->n; i++)
		if (mine->slot[i] == slot - floors->slots)
			break;
	if (i < mine->n)
	{
		if (cloacina_compare_claim_keys(key, &mine->key[i]) < 0)
			mine->key[i] = *key;
	}
	else if (mine->n < PENDING_PER_BACKEND)
	{
		mine->slot[mine->n] = slot - floors->slots;
		mine->key[mine->n] = *key;
		mine->n++;
	}
	else
	{
		floors->unregistered++;
		my_unregistered++;
	}
	registered = true;
	LWLockRelease(floors->lock);
}

/* The least key pending for "slot", or the greatest key. Under the lock. */
static ClaimKey
least_pending(int slot)
{
	ClaimKey	least = greatest_key;

	for (int p = 0; p < floors->n_procs; p++)
		for (int i = 0; i < floors->pending[p].n; i++)
			if (floors->pending[p].slot[i] == slot &&
				cloacina_compare_claim_keys(&floors->pending[p].key[i], &least) < 0)
				least = floors->pending[p].key[i];
	return least;
}

/*
 * Raises the floor of "tenant" if its last refresh is older than REFRESH_INTERVAL_US (see the
 * head comment). Inside SPI, the tenant path entered, in a READ COMMITTED transaction that has
 * written nothing yet (so its next statement takes a new snapshot and it holds no claim of its
 * own that could still roll back).
 */
static void
claim_floor_refresh(const char *schema, Oid tenant)
{
	FloorSlot  *slot = slot_of(tenant);
	TimestampTz now = GetCurrentTimestamp();
	ClaimKey	from;
	ClaimKey	pending;
	ClaimKey	head = greatest_key;
	uint64		version;
	bool		rescan;
	bool		may_raise;
	Oid			argtypes[3] = {INT4OID, TIMESTAMPTZOID, INT8OID};
	Datum		args[3];

	LWLockAcquire(floors->lock, LW_SHARED);
	if (slot->tenant == tenant && now - slot->refreshed_at < REFRESH_INTERVAL_US)
	{
		LWLockRelease(floors->lock);
		return;
	}
	LWLockRelease(floors->lock);

	LWLockAcquire(floors->lock, LW_EXCLUSIVE);
	if (slot->tenant != tenant)
	{
		slot->tenant = tenant;
		slot->floor = cloacina_least_claim_key;
		slot->rescanned_at = now;
		slot->version++;
	}
	else if (now - slot->refreshed_at < REFRESH_INTERVAL_US)
	{
		LWLockRelease(floors->lock);
		return;
	}
	slot->refreshed_at = now;
	rescan = now - slot->rescanned_at >=
		Min(Max(RESCAN_INTERVAL_US, RESCAN_COST_FACTOR * slot->rescan_usecs), MAX_RESCAN_INTERVAL_US);
	from = rescan ? cloacina_least_claim_key : slot->floor;
	version = slot->version;
	pending = least_pending(slot - floors->slots);
	may_raise = floors->unregistered == 0;
	LWLockRelease(floors->lock);
	if (!may_raise)
		return;

	args[0] = Int32GetDatum(from.neg_priority);
	args[1] = TimestampTzGetDatum(from.ready_at);
	args[2] = Int64GetDatum(from.id);
	cloacina_execute_tenant(head_sql, schema, 3, argtypes, args, NULL);
	if (SPI_processed > 0)
	{
		HeapTuple	row = SPI_tuptable->vals[0];
		bool		isnull;

		head.neg_priority = DatumGetInt32(SPI_getbinval(row, SPI_tuptable->tupdesc, 1, &isnull));
		head.ready_at = DatumGetTimestampTz(SPI_getbinval(row, SPI_tuptable->tupdesc, 2, &isnull));
		if (isnull)				/* never claimable: it sorts last of its
								 * priority */
			head.ready_at = DT_NOEND;
		head.id = DatumGetInt64(SPI_getbinval(row, SPI_tuptable->tupdesc, 3, &isnull));
	}

	if (cloacina_compare_claim_keys(&pending, &head) < 0)
		head = pending;
	LWLockAcquire(floors->lock, LW_EXCLUSIVE);
	if (slot->tenant == tenant)
	{
		/*
		 * If the floor changed since it was read (a transaction lowered it to
		 * its own key, or another refresh set it), only the lesser of the two
		 * is safe. A rescan that found a task below the floor still lowers
		 * it: a busy tenant's stream of lowerings, or a refresh that ended
		 * after it, must not keep the task hidden.
		 */
		if (slot->version == version || cloacina_compare_claim_keys(&head, &slot->floor) < 0)
		{
			slot->floor = head;
			slot->version++;
		}
		if (rescan)
		{
			slot->rescanned_at = now;
			slot->rescan_usecs = GetCurrentTimestamp() - now;
		}
	}
	LWLockRelease(floors->lock);
}

/*
 * The key the next claim of handler tasks in "schema" (oid "tenant") starts at, its floor
 * raised first when it is due. Inside SPI, the tenant path entered.
 */
ClaimKey
cloacina_claim_floor(const char *schema, Oid tenant)
{
	ClaimKey	from = cloacina_least_claim_key;
	FloorSlot  *slot;

	/*
	 * Citus is looked up once per backend: it is installed before any tenant
	 * is distributed
	 */
	if (citus_installed < 0)
		citus_installed = cloacina_citus_installed() ? 1 : 0;
	if (floors == NULL || !cloacina_claim_floors || citus_installed)
		return from;
	if (!IsolationUsesXactSnapshot() && !TransactionIdIsValid(GetTopTransactionIdIfAny()))
		claim_floor_refresh(schema, tenant);
	slot = slot_of(tenant);
	LWLockAcquire(floors->lock, LW_SHARED);
	if (slot->tenant == tenant)
		from = slot->floor;
	LWLockRelease(floors->lock);
	return from;
}

void
cloacina_define_claim_floors(void)
{
	DefineCustomBoolVariable("cloacina.claim_floors",
							 "Whether claims start past the claimed tasks at the front of a tenant's queue.",
							 "Off, every claim reads its tenant's queue from the start, past every entry "
							 "vacuum has not yet removed.",
							 &cloacina_claim_floors, true, PGC_SUSET, 0, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(cloacina_claim_floor_status);

/*
 * cloacina.claim_floor(schema_name): where the tenant's claims start. "state" is "start" (no
 * floor: from the first entry of the index), "key" (from priority, ready_at, task_id) or
 * "end" (no ready task when it was last looked for: a claim finds nothing until a transaction
 * makes one ready).
 */
Datum
cloacina_claim_floor_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[6] = {0};
	bool		nulls[6] = {false, true, true, true, true, true};
	Oid			tenant = get_namespace_oid(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	TimestampTz now = GetCurrentTimestamp();
	FloorSlot	slot = {0};
	const char *state = "start";

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "cloacina.claim_floor must return a row");
	if (floors != NULL)
	{
		LWLockAcquire(floors->lock, LW_SHARED);
		slot = *slot_of(tenant);
		LWLockRelease(floors->lock);
	}
	if (slot.tenant == tenant && OidIsValid(tenant))
	{
		if (cloacina_compare_claim_keys(&slot.floor, &greatest_key) == 0)
			state = "end";
		else if (cloacina_compare_claim_keys(&slot.floor, &cloacina_least_claim_key) != 0)
		{
			state = "key";
			values[1] = Int32GetDatum(-slot.floor.neg_priority);
			values[2] = TimestampTzGetDatum(slot.floor.ready_at);
			values[3] = Int64GetDatum(slot.floor.id);
			nulls[1] = nulls[2] = nulls[3] = false;
		}
		values[4] = Float8GetDatum((now - slot.refreshed_at) / 1e6);
		values[5] = Float8GetDatum((now - slot.rescanned_at) / 1e6);
		nulls[4] = nulls[5] = false;
	}
	values[0] = CStringGetTextDatum(state);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
