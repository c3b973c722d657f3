"""Knative played on one machine: the dispatcher (Channel, Subscriptions, Route) and topology read
from knative/base, the collectors that stand in for sinks, and the demo that runs it all."""
