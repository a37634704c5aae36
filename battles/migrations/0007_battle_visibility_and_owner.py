
from django.db import migrations, models


# Existing battles become unlisted too: privacy by default, a public listing is opted into.


class Migration(migrations.Migration):

    dependencies = [
        ('battles', '0006_evidence_and_jury'),
    ]

    operations = [
        migrations.AddField(
            model_name='battle',
            name='owner_hash',
            field=models.CharField(blank=True, help_text="SHA-256 of the owner's token (its browser's arena_owner cookie); empty: no owner.", max_length=64),
        ),
        migrations.AddField(
            model_name='battle',
            name='visibility',
            field=models.CharField(choices=[('unlisted', 'Unlisted'), ('public', 'Public')], db_index=True, default='unlisted', max_length=10),
        ),
    ]
