/*
 * relay.c: on a worker node of a Citus cluster, the scheduler serves no tenant; it hands the
 * due times that the node's backends push to the coordinator's scheduler, which serves them all.
 *
 * A tenant's clients may connect to the node that holds its shards, where its statements run
 * without a round trip through the coordinator (docs/citus.md). What they push (a lease that can
 * expire, a timeout, a retry, ready SQL tasks) lands in this node's due table; one scheduler must
 * act on it, and a second one serving the same tenant would double its SQL-task cap. So each
 * pass moves the table's entries to the coordinator in one command, which pushes them there as
 * cloacina._due() would. A pass that fails puts them back; the scheduler tries again a naptime
 * later.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "cloacina.h"

/* entries handed over per command */
#define RELAY_BATCH 1024

/* The boolean of a one-row, one-column SPI result; false when there is none. */
static bool
spi_bool_result(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_processed != 1)
		return false;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && DatumGetBool(d);
}

/*
 * Whether this node relays: Citus is installed and this node is not the coordinator. Runs in a
 * transaction of its own (the scheduler's, between passes); when the question fails, the error
 * is logged and the answer is what it was.
 */
bool
cloacina_relay_node(bool relaying, MemoryContext scratch)
{
	volatile bool relay = relaying;
	MemoryContext old = MemoryContextSwitchTo(scratch);

	PG_TRY();
	{
		cloacina_unit_begin("cloacina: is this node a Citus worker");

		/*
		 * the function is new in 0.2.0: a server still on 0.1.0's SQL serves
		 * as before
		 */
		if (SPI_execute("SELECT to_regprocedure('cloacina._citus_relay_node()') IS NOT NULL",
						true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look for cloacina._citus_relay_node");
		if (!spi_bool_result())
			relay = false;
		else if (SPI_execute("SELECT cloacina._citus_relay_node()", true, 1) != SPI_OK_SELECT)
			elog(ERROR, "cloacina._citus_relay_node failed");
		else
			relay = spi_bool_result();
		cloacina_unit_commit();
	}
	PG_CATCH();
	{
		cloacina_unit_recover(scratch);
		relay = relaying;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch);
	return relay;
}

/* Hands one batch to the coordinator; raises an error when it was not taken. */
static void
relay_batch(const CloacinaDue *entries, int n)
{
	Datum	   *schemas = palloc(sizeof(Datum) * n);
	Datum	   *dues = palloc(sizeof(Datum) * n);
	Datum	   *ready = palloc(sizeof(Datum) * n);
	Oid			argtypes[3] = {TEXTARRAYOID, TIMESTAMPTZARRAYOID, BOOLARRAYOID};
	Datum		args[3];

	for (int i = 0; i < n; i++)
	{
		schemas[i] = CStringGetTextDatum(entries[i].schema);
		/* (every push has a time; an entry without one is looked at now) */
		dues[i] = TimestampTzGetDatum(entries[i].due == DT_NOEND ? GetCurrentTimestamp() : entries[i].due);
		ready[i] = BoolGetDatum(entries[i].sql_ready);
	}
	args[0] = PointerGetDatum(construct_array(schemas, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(dues, n, TIMESTAMPTZOID, sizeof(TimestampTz),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = PointerGetDatum(construct_array(ready, n, BOOLOID, 1, true, TYPALIGN_CHAR));

	if (SPI_execute_with_args("SELECT cloacina._citus_relay_due($1, $2, $3)", 3, argtypes, args,
							  NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "cloacina._citus_relay_due failed");
}

/* Hands one batch over in a unit of its own; on an error, logs it and puts the batch back. */
static bool
relay_batch_guarded(const CloacinaDue *entries, int n, MemoryContext scratch)
{
	volatile bool handed = true;
	MemoryContext old = MemoryContextSwitchTo(scratch);

	PG_TRY();
	{
		cloacina_unit_begin("cloacina: handing due times to the coordinator");
		relay_batch(entries, n);
		cloacina_unit_commit();
	}
	PG_CATCH();
	{
		cloacina_unit_recover(scratch);
		cloacina_due_put_back(entries, n);
		handed = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch);
	return handed;
}

/*
 * One pass: everything pushed since the last one goes to the coordinator, in batches (each
 * bounded by cloacina.worker_statement_timeout, like every unit). Returns false when a batch
 * failed: it and the rest wait in the table for the next pass.
 */
bool
cloacina_relay_pass(MemoryContext scratch)
{
	static CloacinaDue *entries = NULL;
	int			n;

	if (entries == NULL)
		entries = MemoryContextAlloc(TopMemoryContext, sizeof(CloacinaDue) * RELAY_BATCH);
	do
	{
		n = cloacina_due_take_all(entries, RELAY_BATCH);
		if (n > 0 && !relay_batch_guarded(entries, n, scratch))
			return false;
	} while (n == RELAY_BATCH);
	return true;
}
