/*
 * hint.c: the wake-up hints for a tenant's workers, NOTIFYs on the tenant's private channel
 * that its workers LISTEN on; a "ready" hint also wakes the tenant's waiting claims (wait.c).
 * Hints only lower latency (workers also poll), so one too many costs a wasted claim and one
 * too few a poll interval.
 *
 * "ready" hints (handler tasks became ready) are sent when the transaction commits, so that a
 * claim later in the same transaction can withdraw its tenant's: a completion that claims the
 * tasks it made ready (the SDK's completer does) then wakes no other worker to claim nothing.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_hint_fn);
PG_FUNCTION_INFO_V1(cloacina_hint_sql);

#define MAX_PENDING 16

/*
 * The channel is read and the NOTIFY sent apart, by this backend: on Citus the tenant's tables
 * may live on another node, and a NOTIFY must be sent from the node the workers listen on.
 */
static const char *const channel_sql =
"SELECT notify_channel FROM %1$s.tenant_settings";

/* The tenants whose "ready" hint this transaction sends at commit, with their channels. */
typedef struct PendingHint
{
	char		schema[NAMEDATALEN];
	char		channel[NAMEDATALEN];
} PendingHint;

static PendingHint pending[MAX_PENDING];
static int	n_pending = 0;
static bool callback_registered = false;

static void
send_pending_at_commit(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_COMMIT)
	{
		for (int i = 0; i < n_pending; i++)
		{
			Async_Notify(pending[i].channel, "ready");
			cloacina_wake_claimers_at_commit(pending[i].schema);
		}
	}

	/*
	 * A prepared transaction cannot NOTIFY: its hints are dropped (the
	 * workers poll).
	 */
	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PRE_PREPARE ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		n_pending = 0;
}

static int
find_pending(const char *schema)
{
	for (int i = 0; i < n_pending; i++)
		if (strcmp(pending[i].schema, schema) == 0)
			return i;
	return -1;
}

/* Inside an SPI connection: the tenant's channel, or NULL if it has none. */
static char *
tenant_channel(const char *schema)
{
	Oid			no_types[1] = {InvalidOid};
	bool		isnull;

	cloacina_execute_tenant(channel_sql, schema, 0, no_types, NULL, NULL);
	if (SPI_processed == 0)
		return NULL;
	return TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Inside an SPI connection: tells the tenant's workers "payload" at commit. */
void
cloacina_hint(const char *schema, const char *payload)
{
	char	   *channel = tenant_channel(schema);

	if (channel != NULL)
		Async_Notify(channel, payload);
	if (strcmp(payload, "ready") == 0)
	{
		/* the SQL paths that make tasks ready do not say which: any key */
		cloacina_claim_floor_lower(schema, &cloacina_least_claim_key);
		cloacina_wake_claimers_at_commit(schema);
	}
}

/* Inside an SPI connection: tells the tenant's workers that handler tasks are ready. */
void
cloacina_hint_ready(const char *schema)
{
	char	   *channel;

	if (find_pending(schema) >= 0)
		return;
	if (n_pending == MAX_PENDING)
	{
		cloacina_hint(schema, "ready");
		return;
	}
	channel = tenant_channel(schema);
	if (channel == NULL)
		return;
	if (!callback_registered)
	{
		RegisterXactCallback(send_pending_at_commit, NULL);
		callback_registered = true;
	}
	strlcpy(pending[n_pending].schema, schema, NAMEDATALEN);
	strlcpy(pending[n_pending].channel, channel, NAMEDATALEN);
	n_pending++;
}

bool
cloacina_hint_ready_pending(const char *schema)
{
	return find_pending(schema) >= 0;
}

/* The tenant's ready tasks were all claimed in this transaction: no "ready" hint is needed. */
void
cloacina_withdraw_hint_ready(const char *schema)
{
	int			i = find_pending(schema);

	if (i < 0)
		return;
	pending[i] = pending[n_pending - 1];
	n_pending--;
}

/* cloacina._hint(s, payload) */
Datum
cloacina_hint_fn(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);

	if (!PG_ARGISNULL(1))
	{
		SPI_connect();
		cloacina_hint(path.schema, text_to_cstring(PG_GETARG_TEXT_PP(1)));
		SPI_finish();
	}
	cloacina_leave_tenant_path(&path);
	PG_RETURN_VOID();
}

/* The 0.1.0 script's name for cloacina_hint_fn: a symbol it binds keeps its signature for ever. */
Datum
cloacina_hint_sql(PG_FUNCTION_ARGS)
{
	return cloacina_hint_fn(fcinfo);
}
