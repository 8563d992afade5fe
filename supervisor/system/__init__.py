"""System helpers both sides use: sockets, cgroups, exits, files and places, signals, sd_notify."""
