"""The API wing: the service layer (`control`) and the two transports over it, the gRPC
servicer and the HTTP routes. Nothing below imports from here."""
