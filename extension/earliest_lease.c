/*
 * earliest_lease.c: cloacina._earliest_lease(s, max_dead), when the first lease of a tenant's
 * running tasks runs out, so that the background worker ticks the tenant then and reaps it.
 *
 * A task's entry in tasks_lease_expiry stays after the task finishes, until vacuum removes it,
 * and in a busy tenant those entries lie before the live ones: a running task is one claimed
 * moments ago, and every task claimed in the lease before it (900,000 at 30,000 claims a second
 * and a 30-s lease) has finished since. min(lease_until) reads them all, each a heap visit the
 * first time: half a second per tick of the one worker that serves every tenant, in a
 * 5-million-run burn-down. So the index is read here entry by entry, and after "max_dead"
 * entries whose task has finished, the answer is the lease where it stopped: a time no later
 * than the first live lease. The worker ticks the tenant then and reads on; the entries read
 * are marked dead in the index (kill_prior_tuple), so each costs a heap visit once.
 *
 * Where Citus is installed a tenant's tables may live on another node, whose index this
 * backend cannot read: there the answer is the statement's min(), as before.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/relcache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_earliest_lease);

static const char *const earliest_lease_sql =
"SELECT min(lease_until) FROM %1$s.tasks WHERE status = 'running'";

/* The first live entry's lease in "index" of "tasks", or the lease after "max_dead" dead ones. */
static bool
read_lease_index(Relation tasks, Relation index, int32 max_dead, TimestampTz *lease)
{
	IndexScanDesc scan;
	TupleTableSlot *slot = table_slot_create(tasks, NULL);
	int32		dead = 0;
	bool		found = false;

#if PG_VERSION_NUM >= 180000
	scan = index_beginscan(tasks, index, GetActiveSnapshot(), NULL, 0, 0);
#else
	scan = index_beginscan(tasks, index, GetActiveSnapshot(), 0, 0);
#endif
	scan->xs_want_itup = true;	/* the key of each entry, live or not */
	index_rescan(scan, NULL, 0, NULL, 0);
	while (index_getnext_tid(scan, ForwardScanDirection) != NULL)
	{
		bool		isnull;
		Datum		key = index_getattr(scan->xs_itup, 1, scan->xs_itupdesc, &isnull);

		if (isnull)
			break;				/* NULLs sort last: no lease */

		/*
		 * A visible version reached from this entry is running with this
		 * lease: both columns are in the index (status in its predicate), so
		 * no update that changes them is HOT.
		 */
		if (index_fetch_heap(scan, slot) || dead++ >= max_dead)
		{
			*lease = DatumGetTimestampTz(key);
			found = true;
			break;
		}
	}
	index_endscan(scan);		/* marks the entries read dead in the index */
	ExecDropSingleTupleTableSlot(slot);
	return found;
}

/* cloacina._earliest_lease(s, max_dead) */
Datum
cloacina_earliest_lease(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);
	int32		max_dead = PG_ARGISNULL(1) ? 20000 : PG_GETARG_INT32(1);
	Oid			tenant = get_namespace_oid(path.schema, false);
	Oid			index_oid = get_relname_relid("tasks_lease_expiry", tenant);
	TimestampTz lease = 0;
	bool		found = false;
	bool		read_index = false;

	if (!cloacina_citus_installed())
	{
		Relation	tasks = table_open(get_relname_relid("tasks", tenant), AccessShareLock);

		/*
		 * The engine's own index on tasks (no tenant can add one), or the
		 * statement.
		 */
		if (OidIsValid(index_oid) && list_member_oid(RelationGetIndexList(tasks), index_oid))
		{
			Relation	index = index_open(index_oid, AccessShareLock);

			found = read_lease_index(tasks, index, Max(max_dead, 0), &lease);
			index_close(index, AccessShareLock);
			read_index = true;
		}
		table_close(tasks, AccessShareLock);
	}
	if (!read_index)
	{
		bool		isnull;

		SPI_connect();
		cloacina_execute_tenant(earliest_lease_sql, path.schema, 0, NULL, NULL, NULL);
		lease = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												  &isnull));
		found = !isnull;
		SPI_finish();
	}
	cloacina_leave_tenant_path(&path);
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(lease);
}
