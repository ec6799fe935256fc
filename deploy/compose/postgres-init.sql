-- One database per service that keeps state (each service migrates its own at start).
CREATE DATABASE rondo_gateway;
CREATE DATABASE rondo_scheduler;
CREATE DATABASE rondo_artifacts;
