"""What a person looks at: terminal tables, PNG plots and the self-contained HTML report."""
