"""Claims about finished runs: pre-registration, verdicts, dose-response, corpus audit, monitor
replay. Reads stores and summaries; never trains."""
