#!/bin/sh
# A client-go exec credential plugin for the tests: prints an ExecCredential
# with the ServiceAccount token the test put in $TOKEN_FILE. It records each
# run in $RUNS_FILE and the KUBERNETES_EXEC_INFO it got in $INFO_FILE.
#   FIRST_TOKEN_BAD=1  the first run hands out a token the API refuses (401)
#   TTL=N              expirationTimestamp N seconds from now
#   FAIL_MESSAGE=...   print it on stderr and exit 1 (a plugin that wants a login)
set -eu
echo run >> "$RUNS_FILE"
printf '%s' "${KUBERNETES_EXEC_INFO:-}" > "$INFO_FILE"
if [ -n "${FAIL_MESSAGE:-}" ]; then
	echo "$FAIL_MESSAGE" >&2
	exit 1
fi
runs=$(wc -l < "$RUNS_FILE")
token=$(cat "$TOKEN_FILE")
expiry=""
if [ -n "${FIRST_TOKEN_BAD:-}" ] && [ "$runs" -eq 1 ]; then
	token=not-a-valid-token
elif [ -n "${TTL:-}" ]; then
	expiry=",\"expirationTimestamp\":\"$(date -u -d "+$TTL seconds" +%Y-%m-%dT%H:%M:%SZ)\""
fi
printf '{"apiVersion":"%s","kind":"ExecCredential","status":{"token":"%s"%s}}\n' \
	"${API_VERSION:-client.authentication.k8s.io/v1}" "$token" "$expiry"
