"""Domain logic shared by handlers and jobs. Each module is a set of functions taking the kernel."""
