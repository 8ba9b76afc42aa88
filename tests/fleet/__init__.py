"""The fleet tests: replicas behind a load balancer, sharing PostgreSQL and Redis."""
