/*
 * secret.c: passwords and other secrets. Generated passwords and channel tokens come from the
 * operating system's CSPRNG (pg_strong_random); passwords are turned into SCRAM verifiers here
 * so that only the verifier is ever part of an SQL statement.
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * pg_be_scram_build_secret is declared in libpq/scram.h, which pulls in libpq-be.h and with it
 * the GSSAPI headers when the server was built with GSSAPI (Debian's packages are), headers a
 * server-dev install need not have (libkrb5-dev). So it is declared here as well, and the real
 * header is included whenever it can be compiled: a change of the signature in a later major
 * is then a "conflicting types" error (CI installs libkrb5-dev so that it always checks). The
 * signature is the same in 15 through 18 (docs/decisions.md).
 */
#if (!defined(ENABLE_GSS) || __has_include(<gssapi/gssapi.h>) || __has_include(<gssapi.h>)) && \
	(!defined(USE_OPENSSL) || __has_include(<openssl/ssl.h>))
#include "libpq/scram.h"
#elif defined(CLOACINA_STRICT)
#error "libpq/scram.h cannot be compiled here (install the GSSAPI and OpenSSL headers: libkrb5-dev, libssl-dev)"
#endif
extern char *pg_be_scram_build_secret(const char *password);

PG_FUNCTION_INFO_V1(cloacina_generate_password);
PG_FUNCTION_INFO_V1(cloacina_random_token);
PG_FUNCTION_INFO_V1(cloacina_scram_verifier);
PG_FUNCTION_INFO_V1(cloacina_url_escape);

/* 32 random bytes give 43 URL-safe base64 characters: 256 bits of entropy. */
#define PASSWORD_BYTES 32
#define MAX_TOKEN_BYTES 64

static const char url_safe_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Random bytes from the CSPRNG, encoded as unpadded URL-safe base64. */
static text *
random_url_safe_text(int nbytes)
{
	uint8		bytes[MAX_TOKEN_BYTES];
	char		out[(MAX_TOKEN_BYTES * 4) / 3 + 4];
	int			len = 0;
	uint32		bits = 0;
	int			nbits = 0;

	Assert(nbytes > 0 && nbytes <= MAX_TOKEN_BYTES);
	if (!pg_strong_random(bytes, nbytes))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));

	for (int i = 0; i < nbytes; i++)
	{
		bits = (bits << 8) | bytes[i];
		nbits += 8;
		while (nbits >= 6)
		{
			nbits -= 6;
			out[len++] = url_safe_alphabet[(bits >> nbits) & 0x3F];
		}
	}
	if (nbits > 0)
		out[len++] = url_safe_alphabet[(bits << (6 - nbits)) & 0x3F];

	explicit_bzero(bytes, sizeof(bytes));
	return cstring_to_text_with_len(out, len);
}

Datum
cloacina_generate_password(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(random_url_safe_text(PASSWORD_BYTES));
}

Datum
cloacina_random_token(PG_FUNCTION_ARGS)
{
	int32		nbytes = PG_GETARG_INT32(0);

	if (nbytes < 1 || nbytes > MAX_TOKEN_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("token length must be between 1 and %d bytes", MAX_TOKEN_BYTES)));
	PG_RETURN_TEXT_P(random_url_safe_text(nbytes));
}

Datum
cloacina_scram_verifier(PG_FUNCTION_ARGS)
{
	char	   *password = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *verifier;

	if (password[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PASSWORD),
				 errmsg("password must not be empty")));
	verifier = pg_be_scram_build_secret(password);
	explicit_bzero(password, strlen(password));
	PG_RETURN_TEXT_P(cstring_to_text(verifier));
}

/* Percent-encodes everything but RFC 3986 unreserved characters, for libpq URIs. */
Datum
cloacina_url_escape(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	const unsigned char *src = (const unsigned char *) VARDATA_ANY(in);
	int			srclen = VARSIZE_ANY_EXHDR(in);
	StringInfoData out;

	initStringInfo(&out);
	for (int i = 0; i < srclen; i++)
	{
		unsigned char c = src[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '.' || c == '_' || c == '~')
			appendStringInfoChar(&out, (char) c);
		else
			appendStringInfo(&out, "%%%02X", c);
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
