"""What a network is: the design space, one point of it, its cost, and how it is built."""
