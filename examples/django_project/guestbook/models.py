"""One model, so the form POST writes to the database like a real app."""

from django.db import models


class Entry(models.Model):
    name = models.CharField(max_length=100)
    message = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.name}: {self.message[:30]}"
