/*
 * transaction_guard.c: no tenant's transaction stays open longer than
 * cloacina.tenant_transaction_timeout.
 *
 * An open transaction with a snapshot or a transaction id holds back its database's xmin
 * horizon: vacuum keeps every row that died after it began, in every tenant's tables, and
 * claims, ticks and the reaper read past them, so one idle transaction slows the service for
 * everyone, more the longer it stays. Any role may open one and idle; the session settings
 * that would end it (idle_in_transaction_session_timeout, statement_timeout) are the tenant's
 * own to turn off. So the scheduler ends the sessions that logged in as a tenant's role and
 * whose transaction has been open longer than the operator's limit, and looks again when the
 * oldest of the others would reach it.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "cloacina.h"

int			cloacina_tenant_transaction_timeout_ms = 15 * 60 * 1000;

/*
 * $1 the start before which a transaction is too old, $2 this database. The client sessions
 * of tenant roles with a transaction open, those started before $1 ended by the same statement
 * (so no pid is read in one statement and signalled in another).
 */
static const char *const tenant_transactions_sql =
"SELECT a.pid, t.schema_name, a.xact_start,"
"       CASE WHEN a.xact_start < $1 THEN pg_catalog.pg_terminate_backend(a.pid) ELSE false END AS ended"
"  FROM pg_catalog.pg_stat_activity a JOIN cloacina.tenant t ON t.username = a.usename"
" WHERE a.datid = $2 AND a.backend_type = 'client backend' AND a.xact_start IS NOT NULL";

/*
 * Ends the tenant sessions whose transaction is older than the limit. Returns when to look
 * again: when the oldest transaction still open would reach the limit, or "latest".
 */
TimestampTz
cloacina_end_long_tenant_transactions(TimestampTz latest)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = latest;
	int64		limit_us = (int64) cloacina_tenant_transaction_timeout_ms * 1000;
	Oid			argtypes[2] = {TIMESTAMPTZOID, OIDOID};
	Datum		args[2] = {TimestampTzGetDatum(now - limit_us), ObjectIdGetDatum(MyDatabaseId)};

	if (cloacina_tenant_transaction_timeout_ms <= 0)
		return latest;
	cloacina_unit_begin("cloacina: ending tenant transactions past their limit");
	if (SPI_execute_with_args(tenant_transactions_sql, 2, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the tenants' transactions");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		TimestampTz started = DatumGetTimestampTz(SPI_getbinval(row, desc, 3, &isnull));
		bool		ended = DatumGetBool(SPI_getbinval(row, desc, 4, &isnull));

		if (ended)
			ereport(LOG,
					(errmsg("cloacina: ended the session %s of tenant %s: its transaction was open for %.0f s",
							SPI_getvalue(row, desc, 1), quote_identifier(SPI_getvalue(row, desc, 2)),
							(now - started) / 1e6),
					 errdetail("An open transaction holds back vacuum in every tenant's tables; "
							   "cloacina.tenant_transaction_timeout is %d ms.",
							   cloacina_tenant_transaction_timeout_ms)));
		else
			next = Min(next, started + limit_us);
	}
	cloacina_unit_commit();
	return next;
}
