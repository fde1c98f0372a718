"""Running a campaign: apply, reconcile, rollout waves, relaunch, messages, cancel, the status
refresh and the remote preflight."""
