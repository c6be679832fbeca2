"""Streaming: the event model, the mapping from framework updates to
events, the runners, the encoders and the HTTP response."""
