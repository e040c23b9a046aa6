"""A toy web service (`toyweb.server`) and a health checker that keeps an
IPVS service's weights in step with its real servers' health
(`toyweb.healthcheck`)."""
