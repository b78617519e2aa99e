from django.db import migrations


def give_raters_the_rating_permission(apps, schema_editor):
    """Rating is Django's add_rating permission, held by the raters group. On a new database the
    permission is made here, as Django makes permissions only after all migrations ran."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    rating, _ = ContentType.objects.get_or_create(app_label="dashboard", model="rating")
    permission, _ = Permission.objects.get_or_create(
        content_type=rating, codename="add_rating", defaults={"name": "Can add rating"}
    )
    group, _ = Group.objects.get_or_create(name="raters")
    group.permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0003_one_open_lease_per_rater"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(give_raters_the_rating_permission, migrations.RunPython.noop, elidable=True),
    ]
