"""The send stage: batches to UserFlux's Integration API.

request.py builds the request, client.py only sends it and translates the answer
(transport.py and http11.py carry it), retry.py decides when to try again, throttle.py
holds every sender when UserFlux says wait or keeps failing. direct.py sends the first
request of every batch from the pipeline's own thread; sender.py takes a batch on from
an answer that was not a 2xx (retrying, splitting a refused batch), and pool.py runs up
to max_in_flight of those at once on threads.
"""
