/*
 * run_options.c: the options of execute and execute_batch ({"priority", "idempotency_key",
 * "run_at", "timeout_ms"}), read and checked in C because every SDK execute sends some (its
 * idempotency key): the plpgsql reader cost as much as the start of the run itself.
 */
#include "postgres.h"

#include "access/xact.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "cloacina.h"

#define WHAT "execute options"
#define MAX_KEY_LENGTH 200

static const char *const allowed_keys[] = {"priority", "idempotency_key", "run_at", "timeout_ms"};

/* The value as JSON text, for messages. */
static char *
json_text(JsonbValue *v)
{
	return JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, -1);
}

static bool
is_allowed(const char *key, int length)
{
	for (size_t i = 0; i < lengthof(allowed_keys); i++)
		if ((int) strlen(allowed_keys[i]) == length && strncmp(allowed_keys[i], key, length) == 0)
			return true;
	return false;
}

/* Refuses a key outside allowed_keys, naming the first unknown one in sort order. */
static void
check_keys(Jsonb *options)
{
	JsonbIterator *it = JsonbIteratorInit(&options->root);
	JsonbValue	v;
	JsonbIteratorToken token;
	char	   *unknown = NULL;

	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;

		if (token != WJB_KEY || is_allowed(v.val.string.val, v.val.string.len))
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		if (unknown == NULL || strcmp(key, unknown) < 0)
			unknown = key;
	}
	if (unknown != NULL)
	{
		StringInfoData allowed;

		initStringInfo(&allowed);
		for (size_t i = 0; i < lengthof(allowed_keys); i++)
			appendStringInfo(&allowed, "%s%s", i > 0 ? ", " : "", allowed_keys[i]);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg(WHAT " has unknown key \"%s\"", unknown),
				 errhint("Allowed keys: %s.", allowed.data)));
	}
}

static JsonbValue *
find_key(Jsonb *options, const char *key)
{
	return getKeyJsonValueFromContainer(&options->root, key, strlen(key), NULL);
}

/* An integer option between lo and hi, with the messages of cloacina._json_int. */
static int64
integer_option(JsonbValue *v, const char *name, int64 lo, int64 hi)
{
	Numeric		n;

	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option %s must be an integer (got %s)", name, json_text(v))));
	n = v->val.numeric;
	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(n),
										  DirectFunctionCall2(numeric_trunc, NumericGetDatum(n),
															  Int32GetDatum(0)))) ||
		DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(n),
										  NumericGetDatum(int64_to_numeric(lo)))) < 0 ||
		DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(n),
										  NumericGetDatum(int64_to_numeric(hi)))) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option %s must be an integer between " INT64_FORMAT " and " INT64_FORMAT " (got %s)",
						name, lo, hi, json_text(v))));
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(n)));
}

/* run_at: a timestamp string; a parse error is reported as this option's. */
static TimestampTz
timestamp_option(JsonbValue *v)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *text = v->type == jbvString ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
	volatile TimestampTz result = 0;

	if (text !=NULL)
	{
		PG_TRY();
		{
			result = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(text),
															 ObjectIdGetDatum(InvalidOid),
															 Int32GetDatum(-1)));
		}
		PG_CATCH();
		{
			/* Only to replace the message: the error is raised again at once. */
			MemoryContextSwitchTo(caller);
			FlushErrorState();
			text = NULL;
		}
		PG_END_TRY();
	}
	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_DATETIME_FORMAT),
				 errmsg("option run_at must be a timestamp string (got %s)", json_text(v))));
	return result;
}

void
cloacina_parse_run_options(Jsonb *options, RunOptions *out)
{
	JsonbValue *v;

	out->priority = 0;
	out->idempotency_key = NULL;
	out->run_at = GetCurrentTransactionStartTimestamp();
	out->timeout = NULL;
	if (options == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg(WHAT " must be a JSON object (got %s)",
						TextDatumGetCString(DirectFunctionCall1(jsonb_typeof, JsonbPGetDatum(options))))));
	if (JB_ROOT_COUNT(options) == 0)
		return;
	check_keys(options);

	if ((v = find_key(options, "priority")) != NULL)
		out->priority = (int32) integer_option(v, "priority", -1000, 1000);
	if ((v = find_key(options, "timeout_ms")) != NULL)
	{
		int64		ms = integer_option(v, "timeout_ms", 1, INT64CONST(31536000000));

		out->timeout = palloc0(sizeof(Interval));
		out->timeout->time = ms * 1000;
	}
	if ((v = find_key(options, "idempotency_key")) != NULL)
	{
		if (v->type != jbvString || v->val.string.len == 0 ||
			pg_mbstrlen_with_len(v->val.string.val, v->val.string.len) > MAX_KEY_LENGTH)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option idempotency_key must be a non-empty string of at most %d characters",
							MAX_KEY_LENGTH)));
		out->idempotency_key = cstring_to_text_with_len(v->val.string.val, v->val.string.len);
	}
	if ((v = find_key(options, "run_at")) != NULL)
		out->run_at = timestamp_option(v);
}
