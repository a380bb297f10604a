"""The send stage: batches to UserFlux's Integration API.

request.py builds the request, client.py only sends it and translates the answer,
retry.py decides when to try again, sender.py takes one batch to an end (retrying,
splitting a refused batch), pool.py runs up to max_in_flight senders at once.
"""
