"""Episode records: demonstration files, dataset exports, outcome logs."""
