#!/usr/bin/env bash
# `make chaos`: the fault matrix against the local control plane (started when not running,
# stopped afterwards if this script started it). Runs each row's test on its own and prints
# a table: fault, phase, outcome asserted, pass/fail. The same tests run in `make test`.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source "$ROOT/hack/cluster-lib.sh"
use_cluster
PROMETHEUS_BIN=$(bash "$ROOT/hack/install-prometheus.sh") || exit 1
export ROLLGUARD_TEST_KUBECONFIG="$ROOT/.local-cluster/kubeconfig" ROLLGUARD_PROMETHEUS="$PROMETHEUS_BIN"
export ROLLGUARD_KUBECTL="$ROOT/.local-cluster/bin/kubectl"

# test binary | test | fault | phase | outcome asserted
ROWS=(
  "faults|killed_between_a_canary_weight_write_and_its_status_write_no_step_is_repeated_or_skipped|SIGKILL after the route write|canary step|no step repeated or skipped"
  "faults|killed_in_a_timed_pause_the_pause_is_not_restarted_from_zero|SIGKILL after the status write|timed pause|pause ends on its first clock"
  "faults|killed_in_a_gradual_rollback_hold_the_hold_and_the_record_are_kept|SIGKILL after the status write, in each hold|gradual holds (50%, 20%)|each hold on its clock, same lastRollback"
  "faults|killed_at_the_status_write_after_an_abort_the_aborts_events_are_out|Aborted Event held, SIGKILL at the next status write|gradual hold after an abort|next status waits for the Event, Event out once"
  "faults|killed_while_a_cold_rollback_target_scales_up_the_rollback_is_not_started_twice|SIGKILL after the status write|cold target scaling up|one rollback, same startedAt"
  "faults|killed_in_the_guard_window_the_window_is_kept_and_a_breach_still_rolls_back|SIGKILL after the promotion's status write|guard window|window start kept, breach rolls back"
  "faults|killed_during_verification_the_window_keeps_its_start_and_passes_once|SIGKILL after the rollback's status write|verification window|window start kept, Passed once"
  "faults|an_abort_takes_the_weight_off_while_a_reconcile_of_the_same_model_deployment_hangs|a reconcile's write held, abort meanwhile|canary pause, promote under way|all to stable at once, never the promote's weight"
  "faults|a_breach_takes_the_weight_off_while_a_reconcile_of_the_same_model_deployment_hangs|a reconcile's write held, Critical breach meanwhile|canary pause, promote under way|all to stable at once, never the promote's weight"
  "apiserver_restart|a_control_plane_restart_mid_pause_and_mid_rollback_resumes_where_it_was_and_writes_nothing_twice|etcd + API server restart|timed pause, gradual hold|resumes on its clocks, nothing twice"
  "leader|a_leader_killed_at_50_percent_is_followed_without_a_double_step_and_a_promote_written_meanwhile_applies_once|leader SIGKILL after a weight write|canary at 50%, promote meanwhile|no double step, promote once"
  "canary|a_canary_walking_its_steps_never_flaps|none (every status watched)|six-step canary, three pauses|nothing flaps"
  "leader|a_leader_killed_in_a_gradual_hold_is_followed_on_the_same_clock_and_the_same_rollback|leader SIGKILL after the hold's status write|gradual hold|same clock, same lastRollback, each step once"
  "midflight|a_model_deployment_deleted_mid_canary_returns_the_route_to_stable_before_it_goes|ModelDeployment deleted (--cascade=orphan)|canary at 60%|route 100/0 on stable first, TrafficReset Event"
  "midflight|a_canary_deleted_while_the_operator_is_down_goes_once_it_is_back_with_the_route_on_stable|deleted while the operator is down|canary at 60%|held until the operator resets the route"
  "restart|an_operator_killed_at_any_point_of_a_rollout_converges_with_history_intact|SIGKILL at blind delays|create, pause, rollback|history intact"
  "leader|only_the_leader_reconciles_and_a_follower_takes_over_when_it_dies|leader SIGKILL|steady state|follower takes the Lease"
  "slow_metrics|a_manual_rollback_does_not_wait_for_a_hanging_provider|Prometheus hangs|guard window|rollback within 2.5 s"
  "slow_metrics|a_manual_rollback_does_not_wait_for_a_provider_that_answers_after_20s|Prometheus answers after 20 s|guard window|rollback within 2.5 s"
  "slow_metrics|a_promote_and_an_abort_do_not_wait_for_a_hanging_provider|Prometheus hangs|canary pause|promote and abort within 2.5 s"
  "slow_metrics|a_misbehaving_provider_ends_in_the_documented_verdict_and_never_delays_a_rollback|Prometheus 5xx/string/matrix/50 series/empty/NaN/+Inf|guard window|documented verdict, rollback quick"
  "metrics|prometheus_stopped_mid_canary_holds_and_the_rollout_goes_on_once_it_is_back|Prometheus stopped|canary|Hold, then resumes"
  "fights|a_gitops_tool_reapplying_every_second_does_not_disturb_a_canary_a_gradual_rollback_or_a_held_rollback|SSA re-apply every second|canary, gradual, after rollback|steps once, held, spec untouched"
  "fights|a_route_weight_someone_else_edits_mid_canary_is_restored_once_with_an_event|route weights edited|canary pause|restored once, Event, no loop"
  "fights|a_route_weight_someone_else_raises_in_a_gradual_hold_is_restored_once_on_the_same_clock|route weight raised|gradual hold|restored once, same clock, no loop"
  "operator|an_edited_child_deployment_is_restored_without_a_write_loop|child Deployment edited|steady state|restored, Event, no loop"
  "conflicts|a_rollback_written_with_a_promote_wins|rollback-to + promote|canary pause|rollback wins"
  "conflicts|an_abort_written_with_a_retry_wins|abort + retry|canary pause|abort wins"
  "conflicts|two_rollback_targets_in_quick_succession_end_on_the_last_one_written|two rollback-to values|steady state|last value wins, none lost"
  "conflicts|a_request_on_a_model_deployment_being_deleted_changes_nothing|request while deleting|deletion|ignored, children not recreated"
  "midflight|a_threshold_lowered_mid_canary_rolls_the_canary_back_by_the_new_threshold|threshold lowered|canary|rolled back by the new threshold"
  "midflight|a_threshold_lowered_mid_gradual_rollback_pauses_the_walk_on_an_unhealthy_target|threshold lowered|gradual rollback|walk pauses, resumes when raised"
  "midflight|a_policy_deleted_mid_canary_leaves_the_canary_unjudged_and_it_can_be_promoted|policy deleted|canary|PolicyResolved=False, promotable"
  "midflight|a_policy_deleted_mid_gradual_rollback_finishes_the_rollback_at_once|policy deleted|gradual rollback|finished at once (Instant)"
  "midflight|revision_history_limit_lowered_mid_canary_keeps_the_revisions_in_use|revisionHistoryLimit 10 -> 1|canary|revisions in use kept"
  "limits|a_64_step_canary_runs_to_completion|64-step canary|rollout|every step once"
  "limits|a_50_revision_history_runs_to_completion_and_its_status_stays_small|50-revision history|rollouts|pruned to 50, object small"
  "fuzz||fuzzed user text (proptest)|parsing|no panic, errors name the value"
)

cargo build --quiet --tests || exit 1
results=()
failed=0
for row in "${ROWS[@]}"; do
  IFS='|' read -r bin test fault phase outcome <<<"$row"
  if [[ -n $test ]]; then
    cargo test --quiet --test "$bin" -- --exact "$test" >"/tmp/rollguard-chaos-$bin-$test.log" 2>&1
  else
    cargo test --quiet --test "$bin" >"/tmp/rollguard-chaos-$bin.log" 2>&1
  fi
  if [[ $? == 0 ]]; then verdict=pass; else verdict=FAIL; failed=1; fi
  results+=("$fault|$phase|$outcome|$verdict")
  echo "$verdict: $bin ${test:-all}" >&2
done
printf '\n%-52s | %-34s | %-36s | %s\n' fault phase outcome result
printf '%s\n' "$(printf -- '-%.0s' {1..134})"
for r in "${results[@]}"; do
  IFS='|' read -r fault phase outcome verdict <<<"$r"
  printf '%-52s | %-34s | %-36s | %s\n' "$fault" "$phase" "$outcome" "$verdict"
done
exit $failed
