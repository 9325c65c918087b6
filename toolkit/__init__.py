"""selfhost: size, deploy and operate open-weight LLMs on your own hardware."""

__version__ = "0.1.0"
