"""`make bench`: Sluice against the bare upstream, nginx, LiteLLM and Portkey."""
