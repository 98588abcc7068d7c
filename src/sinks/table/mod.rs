//! Tables: keyed rows in SQL tables (the table sink lands in this change).
