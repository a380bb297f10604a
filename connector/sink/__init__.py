"""The send stage: batches to UserFlux's Integration API.

request.py builds the request body; client.py holds where and how it is posted (``Route``)
and posts from a sender thread, on connection.py's keep-alive connection or through
proxy.py; http11.py reads the answer off the wire, errors.py names what can go wrong on
the way, and outcome.py says what an answer (or its absence) means for the batch, for
every path alike. retry.py decides when to try again, throttle.py holds every sender when
UserFlux says wait or keeps failing. direct.py sends the first request of every batch
from the pipeline's own thread; sender.py takes a batch on from an answer that was not a
2xx (retrying, splitting a refused batch), and pool.py runs up to max_in_flight of those
at once on threads.
"""
