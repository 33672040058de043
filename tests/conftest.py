import logging

# kafka-python and aiokafka log every (re)connection at INFO/ERROR while brokers start and stop.
for noisy in ("kafka", "aiokafka"):
    logging.getLogger(noisy).setLevel(logging.CRITICAL)
