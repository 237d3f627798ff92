"""The guestbook: a form protected by CSRF that stores an entry, and a JSON list."""

from django.http import JsonResponse
from django.shortcuts import render

from .forms import EntryForm
from .models import Entry


def sign(request):
    if request.method == "POST":
        form = EntryForm(request.POST)
        if form.is_valid():
            entry = Entry.objects.create(**form.cleaned_data)
            return render(request, "guestbook/thanks.html", {"entry": entry})
    else:
        form = EntryForm()
    return render(request, "guestbook/form.html", {"form": form})


def entries(request):
    return JsonResponse({"entries": [
        {"name": e.name, "message": e.message} for e in Entry.objects.order_by("id")
    ]})
