"""Planning: the scheduler process (scheduler) extends each live show's plan, scheduled 24/7 shows (scheduled) are
planned by studio.schedule, and one scheduler of a fleet leads (leadership)."""
