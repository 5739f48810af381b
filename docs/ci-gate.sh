#!/bin/sh
# Gate a release on a dataset run: runs the dataset against a version, waits
# for the run to finish, asks the server's CI gate for a decision and exits
# by it. POSIX sh; needs curl and jq.
#
#   TRULAYER_URL      the server, e.g. https://trulayer.internal:8443
#   TRULAYER_API_KEY  an API key of the dataset's organisation, without scopes
#                     or with the scopes ingest and query
#   DATASET_ID        the dataset to run
#   VERSION_ID        the version of the dataset to run it against
# Optional:
#   BASELINE_RUN_ID   a finished run of the same dataset to compare with
#   SCORE_FLOOR       the lowest mean score that passes, 0 to 1
#   DELTA_TOLERANCE   how far the mean may fall below the baseline's, 0 to 1
#                     (default 0: any fall fails)
#   ON_FAIL           block (default) or warn: the decision when the policy fails
#   TIMEOUT           seconds to wait for the run (default 1800); then the run
#                     is cancelled and the gate fails (so is a job stopped by
#                     SIGINT, SIGTERM or SIGHUP while it waits)
#   POLL_INTERVAL     seconds between looks at the run (default 5)
#   CURL_OPTS         more curl options, e.g. "--cacert /etc/ssl/trulayer-ca.pem"
#
# Prints run_id, decision, mean_score, mean_delta, reason and run_url, one per
# line, on standard output; progress and errors go to standard error.
# Exit status: 0 pass or warn; 1 block; 2 anything else (a missing setting,
# an HTTP error, with the server's error body, or the timeout).

set -u

fail() {
    printf 'ci-gate: %s\n' "$*" >&2
    exit 2
}

for tool in curl jq; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed and was not found on PATH"
done
for name in TRULAYER_URL TRULAYER_API_KEY DATASET_ID VERSION_ID; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || fail "$name is not set"
done

url=${TRULAYER_URL%/}
on_fail=${ON_FAIL:-block}
timeout=${TIMEOUT:-1800}
interval=${POLL_INTERVAL:-5}
case $on_fail in
    block | warn) ;;
    *) fail "ON_FAIL must be block or warn, not '$on_fail'" ;;
esac
case $timeout in
    '' | *[!0-9]*) fail "TIMEOUT must be a whole number of seconds, not '$timeout'" ;;
esac
# The policy is checked before the run is made, not after it has finished.
for name in SCORE_FLOOR DELTA_TOLERANCE; do
    eval "value=\${$name:-}"
    [ -z "$value" ] || jq -en --arg v "$value" '$v | tonumber | . >= 0 and . <= 1' >/dev/null 2>&1 ||
        fail "$name must be a number from 0 to 1, not '$value'"
done

scratch=$(mktemp -d) || fail "cannot make a temporary directory"
waiting_for=
trap 'rm -rf "$scratch"' EXIT
# A job stopped while its run goes on does not leave the run to use the
# model endpoint for nothing.
trap 'trap - HUP INT TERM; [ -z "$waiting_for" ] || api POST "/v1/eval-runs/$waiting_for/cancel"; exit 2' HUP INT TERM

# api METHOD PATH [BODY]: the answer's body in $scratch/answer and its status
# in $status. The key goes to curl on its standard input, never on its
# command line, where other users of the machine could read it.
api() {
    method=$1
    path=$2
    rm -f "$scratch/request"
    if [ $# -ge 3 ]; then
        printf '%s' "$3" >"$scratch/request"
    fi
    # shellcheck disable=SC2086 # CURL_OPTS is split into options on purpose.
    status=$(printf 'header = "Authorization: Bearer %s"\n' "$TRULAYER_API_KEY" |
        curl -sS -K - ${CURL_OPTS:-} -X "$method" -o "$scratch/answer" -w '%{http_code}' \
            --connect-timeout 10 --max-time 60 \
            ${3:+--data-binary "@$scratch/request" -H "Content-Type: application/json"} \
            "$url$path") ||
        fail "$method $path: no answer from $url (curl failed)"
}

# expect CODE...: fails, printing the server's error body, unless the last
# answer's status is one of CODE.
expect() {
    for code in "$@"; do
        [ "$status" = "$code" ] && return 0
    done
    fail "$method $path answered HTTP $status: $(cat "$scratch/answer")"
}

# field FILTER: a jq filter on the last answer, as raw text. A failure exits
# only the command substitution it runs in: callers add `|| exit 2`.
field() {
    jq -r "$1" "$scratch/answer" 2>/dev/null ||
        fail "$method $path answered HTTP $status with a body that is not JSON: $(cat "$scratch/answer")"
}

# 1. The run.
body=$(jq -n --arg version "$VERSION_ID" '{eval_version_id: $version}') || exit 2
api POST "/v1/datasets/$DATASET_ID/runs" "$body"
expect 202
run_id=$(field '.id // empty') || exit 2
[ -n "$run_id" ] || fail "the scheduled run has no id: $(cat "$scratch/answer")"
printf 'run_id: %s\n' "$run_id"

# 2. Its end.
started=$(date +%s)
seen=
waiting_for=$run_id
while :; do
    api GET "/v1/eval-runs/$run_id"
    expect 200
    progress=$(field '"\(.status), \(.completed_count) of \(.item_count) items done, \(.failed_count) failed"') || exit 2
    if [ "$progress" != "$seen" ]; then
        printf 'ci-gate: run %s: %s\n' "$run_id" "$progress" >&2
        seen=$progress
    fi
    case $progress in
        completed,* | failed,* | cancelled,*) break ;;
    esac
    if [ $(($(date +%s) - started)) -ge "$timeout" ]; then
        api POST "/v1/eval-runs/$run_id/cancel"
        fail "run $run_id has not finished after $timeout s (TIMEOUT); cancelling it answered HTTP $status"
    fi
    sleep "$interval"
done
waiting_for=

# 3. The decision.
body=$(jq -n \
    --arg dataset "$DATASET_ID" --arg run "$run_id" --arg baseline "${BASELINE_RUN_ID:-}" \
    --arg floor "${SCORE_FLOOR:-}" --arg tolerance "${DELTA_TOLERANCE:-}" --arg on_fail "$on_fail" \
    '{dataset_id: $dataset, run_id: $run, policy: {on_fail: $on_fail}}
     + (if $baseline != "" then {baseline_run_id: $baseline} else {} end)
     | if $floor != "" then .policy.score_floor = ($floor | tonumber) else . end
     | if $tolerance != "" then .policy.delta_tolerance = ($tolerance | tonumber) else . end') ||
    exit 2
api POST /v1/ci/gate "$body"
expect 200
decision=$(field .decision) || exit 2
report=$(field '"decision: \(.decision)
mean_score: \(.mean_score)
mean_delta: \(.mean_delta // "none (no baseline)")
reason: \(.reason)
run_url: \(.run_url)"') || exit 2
printf '%s\n' "$report"
case $decision in
    pass | warn) exit 0 ;;
    block) exit 1 ;;
    *) fail "unknown decision '$decision'" ;;
esac
