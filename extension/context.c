/*
 * context.c: cloacina.context_merge(base jsonb, patch jsonb), the deep merge that builds a
 * task's input and a run's final context: objects merge key by key recursively, anything else
 * in patch replaces base, and a NULL side yields the other.
 *
 * It runs once per completed dependency of every task and once per task of every finished run,
 * so it is written in C: the SQL version was planned on every call.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(cloacina_context_merge);

static bool
is_object(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

static Jsonb *merge(JsonbContainer *base, JsonbContainer *patch);

/*
 * Pushes every key of "base", then every key of "patch" (merged with base's value when both are
 * objects). A jsonb object keeps the last of duplicate keys, so patch's keys win.
 */
static Jsonb *
merge(JsonbContainer *base, JsonbContainer *patch)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it;
	JsonbIteratorToken token;
	JsonbValue	key;
	JsonbValue	value;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);

	it = JsonbIteratorInit(base);
	while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		if (token != WJB_KEY)
			continue;
		JsonbIteratorNext(&it, &value, true);
		pushJsonbValue(&state, WJB_KEY, &key);
		pushJsonbValue(&state, WJB_VALUE, &value);
	}

	it = JsonbIteratorInit(patch);
	while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		JsonbValue *in_base;

		if (token != WJB_KEY)
			continue;
		JsonbIteratorNext(&it, &value, true);
		in_base = is_object(&value) ? getKeyJsonValueFromContainer(base, key.val.string.val,
																   key.val.string.len, NULL)
			: NULL;
		if (in_base != NULL && is_object(in_base))
		{
			Jsonb	   *merged = merge(in_base->val.binary.data, value.val.binary.data);

			value.type = jbvBinary;
			value.val.binary.data = &merged->root;
			value.val.binary.len = VARSIZE(merged) - VARHDRSZ;
		}
		pushJsonbValue(&state, WJB_KEY, &key);
		pushJsonbValue(&state, WJB_VALUE, &value);
	}

	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

Datum
cloacina_context_merge(PG_FUNCTION_ARGS)
{
	Jsonb	   *base;
	Jsonb	   *patch;

	if (PG_ARGISNULL(1))
	{
		if (PG_ARGISNULL(0))
			PG_RETURN_NULL();
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	}
	if (PG_ARGISNULL(0))
		PG_RETURN_DATUM(PG_GETARG_DATUM(1));
	base = PG_GETARG_JSONB_P(0);
	patch = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(base) || !JB_ROOT_IS_OBJECT(patch))
		PG_RETURN_JSONB_P(patch);
	PG_RETURN_JSONB_P(merge(&base->root, &patch->root));
}
