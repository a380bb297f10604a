"""The send stage: batches to UserFlux's Integration API.

request.py builds the request, client.py only sends it and translates the answer,
retry.py decides when to try again, throttle.py holds every sender when UserFlux says
wait or keeps failing, sender.py takes one batch to an end (retrying, splitting a
refused batch), pool.py runs up to max_in_flight senders at once.
"""
